"""An offline tokenizer trained on the corpus words, of each family the encoders use.

No machine here reaches a model hub, so tests and the demo need a tokenizer built
locally: `build_vocab` trains one with the `tokenizers` library and writes a directory
that `transformers.AutoTokenizer.from_pretrained(dir)` loads:

- wordpiece: a BERT fast tokenizer (vocab.txt, tokenizer.json, ...), the layout of bert-base-cased;
- bpe: byte-level BPE with RoBERTa's special tokens (<s>, <pad>, </s>, <unk>, <mask>);
- unigram: a SentencePiece-style Unigram model (▁ marks word starts) with XLM-R's special tokens.

With real weights, pass the encoder's own tokenizer (bert-base-cased, roberta-large, a local
directory) to `maf-pipe tokenize --tokenizer` instead.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Iterator

from pipeline.conll import find_splits, iter_conll
from pipeline.errors import DataError
from pipeline.files import atomic_directory, refuse_non_empty

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# RoBERTa's and XLM-R's order: <s> 0, <pad> 1, </s> 2, <unk> 3
ROBERTA_TOKENS = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                  "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
KINDS = ("wordpiece", "bpe", "unigram")


def _corpus_lines(data_dir: Path) -> Iterator[str]:
    # All splits' words, labels unused: a stand-in for the much larger text a real BERT
    # vocabulary was trained on, so that test words are not all [UNK].
    for path in find_splits(data_dir).values():
        for tweet in iter_conll(path):
            yield " ".join(tweet.words)


def build_vocab(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    vocab_size: int = 8000,
    lowercase: bool = False,
    min_frequency: int = 1,
    overwrite: bool = False,
    kind: str = "wordpiece",
) -> dict:
    """Train a tokenizer of `kind` (KINDS) on the corpus of DATA_DIR and save it as a directory.

    Returns a small summary: the output directory, vocabulary size, casing and kind.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if kind not in KINDS:
        raise DataError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise DataError(f"--vocab-size {vocab_size} is too small (at least {len(SPECIAL_TOKENS) + 1})")
    refuse_non_empty(out_dir, overwrite)
    lines = list(_corpus_lines(data_dir))  # validates every split before anything is written
    if kind == "wordpiece":
        size = _wordpiece(lines, out_dir, vocab_size, lowercase, min_frequency)
    else:
        size = _subword(kind, lines, out_dir, vocab_size, lowercase, min_frequency)
    logger.debug("wrote a %d-token %s vocabulary to %s", size, kind, out_dir)
    return {"out_dir": str(out_dir), "vocab_size": size, "lowercase": lowercase, "lines": len(lines), "kind": kind}


def _wordpiece(lines: list[str], out_dir: Path, vocab_size: int, lowercase: bool, min_frequency: int) -> int:
    """A BERT fast tokenizer (vocab.txt, tokenizer.json, ...) in out_dir; its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # the same normaliser and pre-tokeniser BertTokenizerFast rebuilds from do_lower_case
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer creates continuation tokens (##c) in hash-map order, and merge ties are
    # broken by token id, so the same corpus can give a different vocabulary each run
    # (huggingface/tokenizers#1794). Declaring every ##c up front, sorted, fixes their ids
    # and makes training deterministic; they would all be in the vocabulary anyway.
    continuation = sorted(
        {char for line in lines for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.normalizer.normalize_str(line)) for char in word[1:]}
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + [f"##{char}" for char in continuation],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])

    with atomic_directory(out_dir) as tmp:
        vocab_file = tmp / "vocab.txt"
        vocab_file.write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
        options = dict(do_lower_case=lowercase, strip_accents=None, model_max_length=512)
        if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
            fast = BertTokenizerFast(vocab=dict(vocab), **options)
        else:
            fast = BertTokenizerFast(vocab_file=str(vocab_file), **options)
        fast.save_pretrained(str(tmp))
    return len(vocab)


def _subword(kind: str, lines: list[str], out_dir: Path, vocab_size: int, lowercase: bool,
             min_frequency: int) -> int:
    """Byte-level BPE (RoBERTa's kind) or a SentencePiece-style Unigram (XLM-R's), with those
    encoders' special tokens, as a fast tokenizer directory in out_dir; its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(ROBERTA_TOKENS.values()))  # <s> <pad> </s> <unk> <mask>
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase
                                                                          else []))
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    if kind == "unigram":
        # the trainer's near-equal scores come out in hash-map order, and so would the ids:
        # pieces sorted by text give one vocabulary per corpus (the single characters it must
        # keep share one score, so their order cannot change a segmentation)
        trained = json.loads(tokenizer.to_str())["model"]["vocab"]
        floor = min(score for piece, score in trained if len(piece) == 1)
        pieces = [(p, floor if len(p) == 1 else score) for p, score in trained]
        rest = sorted(p for p in pieces if p[0] not in specials)
        ordered = [next(p for p in pieces if p[0] == t) for t in specials] + rest
        tokenizer.model = models.Unigram(ordered, unk_id=specials.index("<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("<s>", "</s>")])
    with atomic_directory(out_dir) as tmp:
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=512,
                                **ROBERTA_TOKENS).save_pretrained(str(tmp))
    return tokenizer.get_vocab_size()
