"""Helpers for the tests (and benchmarks): files written on the fly, Twitter-style stress text,
a seeded tiny model batch. Nothing in the package imports this module."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from maf_core.config import MAFConfig
from pipeline.conll import Tweet
from pipeline.sample import CUE_CLASSES, generate_tweets

# where the tests' `maf serve` apps are reached: a loopback name and port its Host check accepts
SERVE_BASE = "http://127.0.0.1:7860"


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# Words real Twitter-2015/2017 files contain and tokenizers stumble on: long URLs, emoji
# (ZWJ sequences, flags, skin tones), hashtags, mentions, HTML entities, zero-width and
# other format characters, soft hyphens, control characters, odd spaces, other scripts.
HARD_WORDS = [
    "https://t.co/Xy7Qz0AbCd",
    "http://www.example.com/2017/05/12/a-very-long-path/with-many-parts?utm_source=twitter&utm_medium=social&id=1234567890",
    "😂😂😂",
    "👨\u200d👩\u200d👧\u200d👦",
    "🇺🇸",
    "👍🏽",
    "❤️",
    "#MakeAmericaGreatAgain",
    "#NBAFinals2017",
    "@realDonaldTrump",
    "@_user_123",
    "&amp;",
    "&lt;3",
    "\u200b",
    "\u200c",
    "\u200d",
    "\ufeff",
    "\xad",
    "co\xadop",
    "zero\u200bwidth",
    "\x7f",
    "\x01",
    "\xa0",
    "\ufe0f",
    "☀",
    "💜",
    "\u3000",
    "\u2028",
    "\u200f",
    "caf\u00e9",
    "cafe\u0301",
    "東京",
    "مرحبا",
    "Привет",
    "loooooool",
    "2017-05-12",
    "$AAPL",
    "...",
    "—",
    "''",
    "RT",
    ":",
    "\ufffd",
    "ｆｕｌｌｗｉｄｔｈ",
]


def twitter_style_tweets(n: int, seed: int = 0) -> list[Tweet]:
    """`n` tweets of sample-corpus text salted with HARD_WORDS (no images)."""
    rng = random.Random(seed)
    tweets = []
    for sample in generate_tweets(n, seed):
        words, labels = list(sample.tweet.words), list(sample.tweet.labels)
        for _ in range(rng.randint(0, 4)):
            at = rng.randint(0, len(words))
            if 0 < at < len(words) and labels[at].startswith("I-"):
                continue  # keep entities whole
            words.insert(at, rng.choice(HARD_WORDS))
            labels.insert(at, "O")
        if rng.random() < 0.05:  # an ill-formed I- tag, as Twitter-2015 has hundreds
            at = rng.randrange(len(words))
            if labels[at] == "O" and (at == 0 or labels[at - 1] == "O"):
                labels[at] = f"I-{rng.choice(list(CUE_CLASSES))}"
        tweets.append(Tweet(sample.tweet.image_id, words, labels))
    return tweets


def make_batch(config: MAFConfig, batch: int = 8, seed: int = 0, pad_to: int | None = None) -> dict:
    """Tweets of 3..7 words, 1-2 pieces per word, [CLS]/[SEP], padded to the longest (or pad_to)."""
    g = torch.Generator().manual_seed(seed)
    rows, starts, tag_rows = [], [], []
    for _ in range(batch):
        words = int(torch.randint(3, 8, (1,), generator=g))
        ids, first = [2], []
        for _ in range(words):
            first.append(len(ids))
            ids += torch.randint(
                5, config.vocab_size, (int(torch.randint(1, 3, (1,), generator=g)),), generator=g
            ).tolist()
        ids.append(3)
        rows.append(ids)
        starts.append(first)
        tag_rows.append(torch.randint(0, config.num_tags, (words,), generator=g).tolist())
    length = pad_to or max(map(len, rows))
    max_words = max(map(len, starts))
    out = {
        "input_ids": torch.zeros(batch, length, dtype=torch.long),
        "attention_mask": torch.zeros(batch, length, dtype=torch.long),
        "word_starts": torch.zeros(batch, max_words, dtype=torch.long),
        "word_mask": torch.zeros(batch, max_words, dtype=torch.bool),
        "tags": torch.zeros(batch, max_words, dtype=torch.long),
    }
    for i, (ids, first, tags) in enumerate(zip(rows, starts, tag_rows)):
        out["input_ids"][i, : len(ids)] = torch.tensor(ids)
        out["attention_mask"][i, : len(ids)] = 1
        out["word_starts"][i, : len(first)] = torch.tensor(first)
        out["word_mask"][i, : len(first)] = True
        out["tags"][i, : len(tags)] = torch.tensor(tags)
    out["regions"] = torch.rand(batch, config.num_regions, config.image_dim, generator=g)
    out["pooled"] = out["regions"].mean(1)
    out["image_ok"] = torch.ones(batch, dtype=torch.bool)
    # each word's characters (code points, 0 beyond), for the word-level models: words of 1-6
    # letters from a 12-letter alphabet, so that words repeat; a generator of their own leaves
    # the values above as they were
    letters = torch.tensor([ord(c) for c in "abcdeABCDE01"])
    chars = torch.Generator().manual_seed(seed + 7919)
    out["word_chars"] = torch.zeros(batch, max_words, 6, dtype=torch.long)
    for i, first in enumerate(starts):
        for w in range(len(first)):
            n = int(torch.randint(1, 7, (1,), generator=chars))
            out["word_chars"][i, w, :n] = letters[torch.randint(0, len(letters), (n,), generator=chars)]
    return out


def build_bertweet_style_tokenizer(words: list[str], out: Path, merges: int = 300) -> Path:
    """A tokenizer of BERTweet's own kind, which has no fast version: fastBPE codes (word-final
    pieces end in </w>, others are written with @@) trained on `words`, saved as a directory
    that AutoTokenizer loads as BertweetTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertweetTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    alphabet = sorted({c for word in words for c in word})
    bpe.train_from_iterator(words, trainers.BpeTrainer(vocab_size=len(alphabet) * 2 + merges, show_progress=False,
                                                       end_of_word_suffix="</w>", initial_alphabet=alphabet))
    import json

    out.mkdir(parents=True, exist_ok=True)
    codes = json.loads(bpe.to_str())["model"]["merges"]
    (out / "bpe.codes").write_text("".join(f"{' '.join(m) if isinstance(m, list) else m} 1\n" for m in codes),
                                   encoding="utf-8")
    (out / "vocab.txt").write_text("", encoding="utf-8")
    pieces = BertweetTokenizer(str(out / "vocab.txt"), str(out / "bpe.codes"))
    used = sorted({piece for word in set(words) for piece in pieces.bpe(word).split(" ")})
    (out / "vocab.txt").write_text("".join(f"{piece} 1\n" for piece in used), encoding="utf-8")
    codes_text = (out / "bpe.codes").read_text(encoding="utf-8")
    BertweetTokenizer(str(out / "vocab.txt"), str(out / "bpe.codes")).save_pretrained(str(out))
    (out / "bpe.codes").write_text(codes_text, encoding="utf-8")  # saving drops the counts that loading expects
    return out


AMBIGUOUS = 10  # the token id whose tag (B-PER or B-LOC) only the image decides, in image_decided_tweets


def image_decided_tweets(config: MAFConfig, n: int, informative: bool, seed: int) -> dict:
    """A model batch of `n` tweets of 3..7 one-piece words with [CLS]/[SEP] (and as characters: token
    t is the word "w<t>"), other words O, and one word AMBIGUOUS whose tag is B-PER or B-LOC by its
    image's class (key "classes", 0 or 1). Regions:
    that class's prototype plus noise (`informative`), or noise alone: then nothing tells the
    classes apart, and a model that does on held-out tweets has found a shortcut."""
    g = torch.Generator().manual_seed(seed)
    length = 9
    out = {"input_ids": torch.zeros(n, length, dtype=torch.long),
           "attention_mask": torch.zeros(n, length, dtype=torch.long),
           "word_starts": torch.zeros(n, length - 2, dtype=torch.long),
           "word_mask": torch.zeros(n, length - 2, dtype=torch.bool),
           "tags": torch.zeros(n, length - 2, dtype=torch.long),
           "image_ok": torch.ones(n, dtype=torch.bool), "classes": torch.randint(0, 2, (n,), generator=g),
           "word_chars": torch.zeros(n, length - 2, 6, dtype=torch.long)}
    for i in range(n):
        words = int(torch.randint(3, length - 1, (1,), generator=g))
        ids = torch.randint(AMBIGUOUS + 1, config.vocab_size, (words,), generator=g)
        where = int(torch.randint(0, words, (1,), generator=g))
        ids[where] = AMBIGUOUS
        out["input_ids"][i, : words + 2] = torch.cat([torch.tensor([2]), ids, torch.tensor([3])])
        out["attention_mask"][i, : words + 2] = 1
        out["word_starts"][i, :words] = torch.arange(1, words + 1)
        out["word_mask"][i, :words] = True
        out["tags"][i, where] = config.tags.index("B-PER" if out["classes"][i] == 0 else "B-LOC")
        for w, token in enumerate(ids.tolist()):  # the same words as characters, for the word-level models
            word = [ord(c) for c in f"w{token}"]
            out["word_chars"][i, w, : len(word)] = torch.tensor(word)
    noise = torch.randn(n, config.num_regions, config.image_dim, generator=g)
    prototypes = torch.randn(2, 1, config.image_dim, generator=torch.Generator().manual_seed(99)) * 2
    out["regions"] = prototypes[out["classes"]] + 0.5 * noise if informative else noise
    out["pooled"] = out["regions"].mean(1)
    return out


def train_and_tag_the_ambiguous_word(model: torch.nn.Module, train: dict, held_out: dict, steps: int = 120,
                                     lr: float = 3e-3, seed: int = 0) -> float:
    """Train `model` on `train` (batches of 16, AdamW) and return the share of held-out tweets whose
    AMBIGUOUS word scores its own class's tag above the other's (B-PER against B-LOC; 0.5: chance)."""
    from maf_core.models.base import MODEL_KEYS

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(train["classes"]), (16,), generator=g)
        loss = model(**{k: train[k][rows] for k in MODEL_KEYS if k in train}, tags=train["tags"][rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        emissions = model(**{k: held_out[k] for k in MODEL_KEYS if k in held_out}).emissions  # (B, W, K)
    where = (held_out["input_ids"].gather(1, held_out["word_starts"]) == AMBIGUOUS) & held_out["word_mask"]
    per, loc = model.config.tags.index("B-PER"), model.config.tags.index("B-LOC")
    scores = emissions[where]                                    # (B, K): the ambiguous word's
    right = ((scores[:, per] > scores[:, loc]) == (held_out["classes"] == 0)).tolist()
    return sum(right) / len(right)


def chars_to_words(word_chars: torch.Tensor, word_mask: torch.Tensor) -> list[list[str]]:
    """The words of a batch's `word_chars` (code points, 0 beyond), for fitting a word-level model."""
    return [["".join(chr(c) for c in word if c) for word, real in zip(row, mask) if real]
            for row, mask in zip(word_chars.tolist(), word_mask.tolist())]


class StopAfterFirstEpoch(Exception):
    """What `whole_and_resumed` raises after a run's first epoch: a run cut short, as a kill would cut it."""


def stop_after_first_epoch(epoch: int) -> None:
    if epoch == 1:
        raise StopAfterFirstEpoch


def whole_and_resumed(store: Path, text: Path, root: Path, model: MAFConfig, config,
                      wrong_model: MAFConfig | None = None, refused: str | None = None) -> tuple[dict, dict]:
    """A run of `config.epochs` epochs in root/whole, and the same run in root/cut, cut after its
    first epoch and resumed: (the whole run's result, the resumed run's). With `wrong_model`,
    resuming the cut run with that config is first refused with a DataError matching `refused`."""
    import pytest

    from maf_core.train import train
    from pipeline.errors import DataError
    from pipeline.store import FeatureStore

    whole = train(FeatureStore(store), text, root / "whole", model, config)
    with pytest.raises(StopAfterFirstEpoch):
        train(FeatureStore(store), text, root / "cut", model, config, on_epoch_end=stop_after_first_epoch)
    if wrong_model is not None:
        with pytest.raises(DataError, match=refused):
            train(FeatureStore(store), text, root / "cut", wrong_model, config, resume=True)
    return whole, train(FeatureStore(store), text, root / "cut", model, config, resume=True)


BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def tiny_on_bert(name: str, seed: int = 0, **overrides):
    """A BERT model built as UMT-BERT-CRF (GVATT-BERT-CRF, AdaCAN-BERT-CRF ...): its settings, BIO,
    MAFConfig.tiny's sizes."""
    from maf_core.models import build_model, model_class

    torch.manual_seed(seed)
    return build_model(MAFConfig.tiny(**{**model_class(name).settings(), "tags": BIO, **overrides}))


def tiny_on_words(name: str, seed: int = 0, words: list[list[str]] | None = None, **overrides):
    """A word-level image model (GVATT-HBiLSTM-CRF, AdaCAN-CNN-BiLSTM-CRF): its settings at small
    sizes, its vocabularies from `words`."""
    from maf_core.models import build_model, default_config, fit_to_text

    torch.manual_seed(seed)
    default = default_config(name)
    keep = {k: getattr(default, k) for k in ("architecture", "use_alignment", "use_matching", "text_only", "scheme",
                                             "crf_over", "char_encoder")}
    config = MAFConfig.tiny(**{**keep, "word_dim": 10, "char_dim": 5, "char_hidden": 4, "lstm_hidden": 6,
                               "word_dropout": 0.0, **overrides})
    return build_model(fit_to_text(config, words or [["abc", "ABC", "a0"], ["de", "E"]]))


def model_inputs(batch: dict) -> dict:
    """The keys of a `make_batch` batch that every model's forward takes (maf_core.models.MODEL_KEYS)."""
    from maf_core.models import MODEL_KEYS

    return {k: batch[k] for k in MODEL_KEYS}


DDP_BATCH = 9  # uneven on purpose: 5 rows on process 0, 4 on process 1


def _ddp_config(name: str) -> MAFConfig:
    from maf_core.models import model_class

    return MAFConfig.tiny(**model_class(name).settings(), tags=BIO)


def _ddp_batch(name: str) -> dict:
    batch = make_batch(_ddp_config(name), batch=DDP_BATCH, seed=11)
    batch["image_ok"][[2, 6]] = False  # two tweets without an image
    return batch


def _ddp_step(model: torch.nn.Module, core: torch.nn.Module, batch: dict, rows: slice, shard) -> None:
    from maf_core.config import TrainConfig
    from maf_core.models import MODEL_KEYS
    from maf_core.optim import optimizer_for

    optimizer = optimizer_for(core, TrainConfig(lr=1e-3))
    out = model(**{k: batch[k][rows] for k in MODEL_KEYS}, tags=batch["tags"][rows], shard=shard)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
    optimizer.step()


def _ddp_worker(rank: int, world: int, name: str, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from maf_core.distributed import BatchShard, split_sizes
    from maf_core.train import build_model as build_for_training

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:  # the trainer's own DDP wrapping (no find_unused_parameters: every parameter is used)
        core, model = build_for_training(_ddp_config(name), 0, torch.device("cpu"), rank, world)
        shard = BatchShard(rank, split_sizes(DDP_BATCH, world))
        for _ in range(2):
            _ddp_step(model.train(), core, _ddp_batch(name), shard.rows, shard)
        if rank == 0:
            torch.save(core.state_dict(), Path(out_dir, "weights.pt"))
    finally:
        dist.destroy_process_group()


def two_processes_and_one(name: str, tmp_path: Path) -> tuple[dict, dict, dict]:
    """Two optimisation steps of a tiny model of the registry (its `settings()`, BIO) on a batch of
    DDP_BATCH tweets, two without an image: by two processes under the trainer's DDP wrapping, each
    with its share of the rows, and by one process with the whole batch. Returns the weights (two
    processes, one process, before the steps)."""
    import torch.multiprocessing as mp

    from maf_core.train import build_model as build_for_training

    mp.spawn(_ddp_worker, args=(2, name, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "weights.pt", weights_only=True)
    single, _ = build_for_training(_ddp_config(name), 0, torch.device("cpu"), 0, 1)
    start = {k: v.clone() for k, v in single.state_dict().items()}
    for _ in range(2):
        _ddp_step(single.train(), single, _ddp_batch(name), slice(0, DDP_BATCH), None)
    return two, single.state_dict(), start
