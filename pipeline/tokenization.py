"""Tokenize the CoNLL corpus to Arrow: `TEXT_DIR/<split>.arrow` + `TEXT_DIR/meta.json`.

One row per tweet (docs/design.md, "Tokenized text"):

- `image_id` (string), `words` and `labels` (list<string>, as in the source; OTHER read as MISC);
- `input_ids` (list<int32>): [CLS] pieces [SEP], at most `max_length` of them;
- `word_starts` (list<int32>): for each word, the index in `input_ids` of its first piece,
  or -1 when truncation at `max_length` dropped that first piece;
- `tag_ids` (list<int16>): for each word, its tag in the training scheme (index into
  `meta["tags"]`).

`words`, `labels` and `tag_ids` always have one entry per source word: nothing is dropped.
A word that yields no word piece (zero-width space, soft hyphen, lone control characters)
is given [UNK] and listed in `meta["no_piece_words"]`; tweets cut at `max_length` are
listed in `meta["truncated"]` with the words that lost their first piece. Each split's entry in
`meta["splits"]` holds its counts and the sha256 of the source file it was cut from (the corpus'
identity, `corpus_identity`; absent in text tokenized before it was recorded).

Each split is encoded with one batched tokenizer call; pieces are assigned to words by
construction. Tokenizer families (`tokenizer_family`):

- WordPiece (BERT) and SentencePiece (XLM-R, DeBERTa-v3): the pre-split words, each word
  encoded as in pre-training (SentencePiece marks every word's start with ▁);
- byte-level BPE (RoBERTa and its kin): each word on its own, every word but the first with
  the leading space it had in running text, so that pieces are those of pre-training
  (Ġword), not of a word glued to the one before;
- tokenizers without a fast version (BERTweet's own): the same, word by word.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from pipeline.conll import ENTITY_TYPES, SPLITS, Tweet, find_splits, read_conll
from pipeline.errors import DataError
from pipeline.files import atomic_output, file_sha256
from pipeline.schemes import SCHEMES, convert, get_entities, tag_list

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "meta.json"
SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("words", pa.list_(pa.string())),
        ("labels", pa.list_(pa.string())),
        ("input_ids", pa.list_(pa.int32())),
        ("word_starts", pa.list_(pa.int32())),
        ("tag_ids", pa.list_(pa.int16())),
    ]
)


def load_tokenizer(name_or_dir: str):
    """A Hugging Face fast tokenizer from a local directory, the local cache, or the Hub."""
    from transformers import AutoTokenizer

    name_or_dir = str(name_or_dir)
    local = Path(name_or_dir).expanduser()
    looks_like_path = name_or_dir.startswith(("/", ".", "~")) or name_or_dir.count("/") > 1
    if not local.exists() and looks_like_path:
        raise DataError(f"{name_or_dir}: no such tokenizer directory")
    try:
        try:  # a directory, or a Hub name already in the local cache: no network
            tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else name_or_dir,
                                                      use_fast=True, local_files_only=True)
        except OSError:
            if local.exists():
                raise
            logger.info("fetching tokenizer %s from the Hugging Face Hub (HF_HUB_OFFLINE=1 fails at once)",
                        name_or_dir)
            tokenizer = AutoTokenizer.from_pretrained(name_or_dir, use_fast=True)
    except (OSError, ValueError) as err:
        raise DataError(
            f"cannot load a tokenizer from {name_or_dir!r} ({str(err).splitlines()[0]}). "
            "Pass a local directory (one written by `maf-pipe build-vocab`, or a downloaded "
            "BERT such as bert-base-cased) or, with network access, a Hub name."
        ) from None
    return tokenizer


def vocab_sha256(tokenizer) -> str:
    """sha256 of the vocabulary in id order (one token per line): the tokenizer's identity."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    digest = hashlib.sha256()
    for token, _ in vocab:
        digest.update(token.encode("utf-8") + b"\n")
    return digest.hexdigest()


def tokenizer_info(tokenizer, name_or_dir: str) -> dict:
    """What meta.json records about the tokenizer; the trainer checks it against its own."""
    if getattr(tokenizer, "is_fast", False):
        normalizer = tokenizer.backend_tokenizer.normalizer
        lowercase = normalizer is not None and normalizer.normalize_str("Ab") == "ab"
    else:
        lowercase = bool(getattr(tokenizer, "do_lower_case", False))
    return {
        # a local directory by its absolute path, so that a run can find it from anywhere
        "name_or_path": str(Path(name_or_dir).expanduser().resolve()) if Path(name_or_dir).expanduser().is_dir()
        else str(name_or_dir),
        "class": type(tokenizer).__name__,
        "family": tokenizer_family(tokenizer),
        "vocab_size": len(tokenizer),
        "vocab_sha256": vocab_sha256(tokenizer),
        "lowercase": lowercase,
        "pad_id": tokenizer.pad_token_id,
        "unk_id": tokenizer.unk_token_id,
        "cls_id": tokenizer.cls_token_id,
        "sep_id": tokenizer.sep_token_id,
    }


@dataclass
class SplitResult:
    """One tokenized split: the Arrow table, its counts, and what was truncated or had no piece."""

    table: pa.Table
    stats: dict
    truncated: list[dict] = field(default_factory=list)
    no_piece_words: list[dict] = field(default_factory=list)


def tokenize_tweets(
    tweets: Sequence[Tweet], tokenizer, max_length: int = 128, scheme: str = "bioes", split: str = ""
) -> SplitResult:
    """Encode tweets with one batched tokenizer call and align word pieces to words."""
    if max_length < 3:
        raise DataError(f"--max-length {max_length} is too small: [CLS], one piece and [SEP] need 3")
    tag_index = {tag: i for i, tag in enumerate(tag_list(scheme))}
    cls_id, sep_id, unk_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    if None in (cls_id, sep_id, unk_id):
        raise DataError("the tokenizer has no sentence-start (CLS, <s>), separator (SEP, </s>) or unknown token; "
                        "an encoder's tokenizer is expected")
    encoded = _encode(tweets, tokenizer)
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    entities: Counter = Counter()
    truncated, no_piece = [], []
    longest = 0
    for b, tweet in enumerate(tweets):
        input_ids, starts, empty = _align_pieces(tweet, *encoded[b], cls_id, sep_id, unk_id)
        no_piece += [{"split": split, "image_id": tweet.image_id, "line": tweet.line, "index": w,
                      "word": tweet.words[w]} for w in empty]
        longest = max(longest, len(input_ids))
        if len(input_ids) > max_length:
            pieces = len(input_ids)
            input_ids, starts, lost = _truncate(input_ids, starts, max_length, sep_id)
            truncated.append({"split": split, "image_id": tweet.image_id, "line": tweet.line, "pieces": pieces,
                              "dropped_words": [tweet.words[w] for w in lost]})
        chunks = get_entities(tweet.labels)
        try:
            tags = [tag_index[tag] for tag in convert(tweet.labels, scheme, chunks)]
        except KeyError as err:
            raise DataError(f"IMGID:{tweet.image_id}: label {err.args[0]!r} is not in the {scheme} tag set") from None
        for name, value in zip(SCHEMA.names, (tweet.image_id, tweet.words, tweet.labels, input_ids, starts, tags)):
            columns[name].append(value)
        entities.update(entity_type for entity_type, _, _ in chunks)

    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    stats = {
        "tweets": len(tweets),
        "words": sum(len(words) for words in columns["words"]),
        "pieces": sum(len(ids) for ids in columns["input_ids"]),
        "longest_pieces": longest,
        "entities": {entity_type: entities.get(entity_type, 0) for entity_type in ENTITY_TYPES},
        "truncated_tweets": len(truncated),
        "truncated_words": sum(len(item["dropped_words"]) for item in truncated),
        "no_piece_words": len(no_piece),
    }
    return SplitResult(table, stats, truncated, no_piece)


def tokenizer_family(tokenizer) -> str:
    """wordpiece, sentencepiece, byte-level-bpe or bpe (fast tokenizers, by their model and
    pre-tokenizer), or slow (no fast version)."""
    if not getattr(tokenizer, "is_fast", False):
        return "slow"
    backend = tokenizer.backend_tokenizer
    pre = backend.pre_tokenizer
    if pre is not None and "ByteLevel" in pre.__getstate__().decode("utf-8", "replace"):  # its JSON, not the vocab
        return "byte-level-bpe"
    return {"WordPiece": "wordpiece", "Unigram": "sentencepiece"}.get(type(backend.model).__name__, "bpe")


def _encode(tweets: Sequence[Tweet], tokenizer) -> list[tuple[list[int], list[int]]]:
    """Per tweet: its pieces (no special tokens) and the word index of each piece."""
    if tokenizer_family(tokenizer) in ("wordpiece", "sentencepiece", "bpe"):
        encoding = tokenizer([tweet.words for tweet in tweets], is_split_into_words=True, add_special_tokens=False,
                             return_attention_mask=False, return_token_type_ids=False)
        return [(encoding["input_ids"][b], encoding.encodings[b].word_ids) for b in range(len(tweets))]
    # word by word, a space before every word but the first, as in running text
    words = [word if w == 0 else f" {word}" for tweet in tweets for w, word in enumerate(tweet.words)]
    pieces = tokenizer(words, add_special_tokens=False, return_attention_mask=False,
                       return_token_type_ids=False)["input_ids"] if words else []
    out, at = [], 0
    for tweet in tweets:
        ids, word_ids = [], []
        for w in range(len(tweet.words)):
            ids += pieces[at + w]
            word_ids += [w] * len(pieces[at + w])
        out.append((ids, word_ids))
        at += len(tweet.words)
    return out


def _align_pieces(tweet: Tweet, piece_ids: list[int], word_ids: list[int | None], cls_id: int, sep_id: int,
                  unk_id: int) -> tuple[list[int], list[int], list[int]]:
    """[CLS] pieces [SEP], each word's first-piece position, and the words that gave no piece
    (each of those gets one [UNK], so that every word keeps a position)."""
    # word ids are non-decreasing: a word starts where the id changes (+1 for [CLS])
    starts = [j + 1 for j, w in enumerate(word_ids) if j == 0 or w != word_ids[j - 1]]
    if len(starts) == len(tweet.words):
        return [cls_id, *piece_ids, sep_id], starts, []
    input_ids, starts, empty, j = [cls_id], [], [], 0
    for w in range(len(tweet.words)):
        starts.append(len(input_ids))
        while j < len(piece_ids) and word_ids[j] == w:
            input_ids.append(piece_ids[j])
            j += 1
        if starts[-1] == len(input_ids):
            input_ids.append(unk_id)
            empty.append(w)
    assert j == len(piece_ids), f"word ids of IMGID:{tweet.image_id} are not in word order"
    return [*input_ids, sep_id], starts, empty


def _truncate(input_ids: list[int], starts: list[int], max_length: int,
              sep_id: int) -> tuple[list[int], list[int], list[int]]:
    """The first max_length - 1 pieces and [SEP]; words starting past the cut get start -1 and are listed."""
    lost = [w for w, start in enumerate(starts) if start >= max_length - 1]
    starts = [-1 if start >= max_length - 1 else start for start in starts]
    return input_ids[: max_length - 1] + [sep_id], starts, lost


def write_arrow(table: pa.Table, path: str | os.PathLike) -> None:
    """Write a table as one Arrow IPC file, atomically."""
    with atomic_output(path, "wb") as handle:
        with pa.ipc.new_file(handle, table.schema) as writer:
            writer.write_table(table)


def read_split(text_dir: str | os.PathLike, split: str) -> pa.Table:
    """One tokenized split, memory-mapped from TEXT_DIR/<split>.arrow."""
    path = Path(text_dir) / f"{split}.arrow"
    if not path.is_file():
        raise DataError(f"{path}: no such file (run `maf-pipe tokenize` first)")
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: not a readable Arrow IPC file ({err})") from None
    if not table.schema.equals(SCHEMA):
        raise DataError(f"{path}: unexpected columns {table.schema.names}; expected {SCHEMA.names}")
    return table


def read_meta(text_dir: str | os.PathLike) -> dict:
    """TEXT_DIR/meta.json."""
    path = Path(text_dir) / META_FILE
    if not path.is_file():
        raise DataError(f"{path}: no such file; {text_dir} is not a complete `maf-pipe tokenize` output")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def tokenize_corpus(
    data_dir: str | os.PathLike,
    tokenizer_name: str,
    out_dir: str | os.PathLike,
    max_length: int = 128,
    scheme: str = "bioes",
) -> dict:
    """Tokenize every split of DATA_DIR to OUT_DIR; returns the metadata written to meta.json.

    All splits are read and validated before anything is written. meta.json is removed
    first and written last, so a directory with a meta.json is always complete.
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    splits = find_splits(data_dir)
    tweets = {split: read_conll(path) for split, path in splits.items()}
    tokenizer = load_tokenizer(tokenizer_name)
    if max_length > tokenizer.model_max_length:
        raise DataError(
            f"--max-length {max_length} exceeds the tokenizer's limit of {tokenizer.model_max_length} pieces"
        )

    results = {
        split: tokenize_tweets(records, tokenizer, max_length, scheme, split)
        for split, records in tweets.items()
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "source": str(Path(data_dir).resolve()),
        "tokenizer": tokenizer_info(tokenizer, tokenizer_name),
        "max_length": max_length,
        "scheme": scheme,
        "tags": tag_list(scheme),
        "splits": {
            split: {"file": f"{split}.arrow", "source": str(splits[split].resolve()),
                    "sha256": file_sha256(splits[split]), **result.stats}
            for split, result in results.items()
        },
        "truncated": [item for result in results.values() for item in result.truncated],
        "no_piece_words": [item for result in results.values() for item in result.no_piece_words],
    }

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)
    for split, result in results.items():
        write_arrow(result.table, out_dir / f"{split}.arrow")
    for split in set(("train", "valid", "test")) - set(results):  # stale splits of an earlier run
        (out_dir / f"{split}.arrow").unlink(missing_ok=True)
    with atomic_output(out_dir / META_FILE) as handle:
        json.dump(meta, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    return meta


def summary_table(meta: dict) -> str:
    """The per-split summary `maf-pipe tokenize` prints (sha256: the source file's, first 12 digits)."""
    header = ["split", "tweets", "words", *ENTITY_TYPES, "truncated", "no-piece", "sha256"]
    rows = [header]
    for split, stats in meta["splits"].items():
        rows.append(
            [split, stats["tweets"], stats["words"], *(stats["entities"][t] for t in ENTITY_TYPES),
             stats["truncated_tweets"], stats["no_piece_words"], short_sha(stats.get("sha256"))]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) if i else str(cell).ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# -- corpus identity: which version of a corpus a text (and a run trained on it) was cut from ---------


def short_sha(sha256: str | None) -> str:
    """The first 12 hex digits, or "unknown" (text tokenized before meta.json recorded them)."""
    return sha256[:12] if sha256 else "unknown"


def corpus_identity(meta: dict) -> dict[str, dict]:
    """Per split, the sha256 of the source file the text was cut from (None: tokenized before
    meta.json recorded it) and its counts: tweets, words, entities by type. A run keeps this in
    config.json ("corpus"), so that its scores say which version of the corpus they are on."""
    return {split: {"sha256": stats.get("sha256"), "tweets": stats["tweets"], "words": stats["words"],
                    "entities": dict(stats["entities"])}
            for split, stats in meta["splits"].items()}


def corpus_differences(first: dict[str, dict] | None, second: dict[str, dict] | None) -> list[str]:
    """The splits on which two corpus identities are known to differ: another sha256, or a split only
    one of them has. Unknown identities (None, or a split without sha256) are not known to differ."""
    if first is None or second is None:
        return []

    def differ(split: str) -> bool:
        if (split in first) != (split in second):
            return True
        shas = first[split]["sha256"], second[split]["sha256"]
        return None not in shas and shas[0] != shas[1]

    return [split for split in sorted(set(first) | set(second), key=_split_order) if differ(split)]


def corpus_known(identity: dict[str, dict] | None) -> bool:
    """Every split's sha256 is recorded (text tokenized since meta.json records them)."""
    return bool(identity) and all(stats["sha256"] for stats in identity.values())


def describe_corpus(identity: dict[str, dict] | None) -> str:
    """'train sha256 1a2b3c4d5e6f (90 tweets, 1210 words; PER 40, LOC 21, ORG 17, MISC 9); valid ...'."""
    if not identity:
        return "unknown (a run saved before runs recorded their corpus)"
    return "; ".join(
        f"{split} sha256 {short_sha(stats['sha256'])} ({stats['tweets']} tweets, {stats['words']} words; "
        + ", ".join(f"{t} {stats['entities'].get(t, 0)}" for t in ENTITY_TYPES) + ")"
        for split, stats in sorted(identity.items(), key=lambda item: _split_order(item[0])))


def _split_order(split: str) -> tuple[int, str]:
    """train, valid, test, then any other split by name (config.json stores the splits sorted)."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)
