"""The pre-BERT taggers of MAF's Table 2, on words and characters instead of word pieces:

    BiLSTM-CRF (Huang et al. 2015):          word embedding → BiLSTM → CRF
    CNN-BiLSTM-CRF (Ma & Hovy 2016):         [word embedding; max-pooled char CNN] → BiLSTM → CRF
    HBiLSTM-CRF (Lample et al. 2016):        [word embedding; final states of a char BiLSTM] → BiLSTM → CRF

The words and their characters come from the same tokenized text as every other model (its
`words` column, read by maf_core.data as code points, `word_chars`); the word and character
vocabularies are the train split's, built when the model is fitted to the text
(`fit_to_text`) and saved in its config, so a checkpoint rebuilds the model from the file.
Digits are read as 0 (Lample et al.'s `zeros`, NCRF++'s `number_normalized`). Word
embeddings start from `--word-vectors FILE` (GloVe / word2vec text) where the file has the
word (or its lowercase form), and U(±√(3/dim)) otherwise, as Ma & Hovy and NCRF++ do; with no
file, all of them start random (a warning says so). Every value and its source: docs/model.md.

A word is looked up by a 62-bit hash of its code points (two 31-bit polynomial hashes),
computed the same way here in Python for the vocabulary and on the batch's tensors; the
vocabulary is checked to have no two words with one hash.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from maf_core.config import MAFConfig
from maf_core.crf import CRF
from maf_core.data import MAX_WORD_CHARS
from maf_core.distributed import BatchShard
from maf_core.models.base import TASK_TAGS, MAFOutput, SavedModel, at_least_fp32, count_by_part
from pipeline.errors import DataError
from pipeline.files import file_sha256

logger = logging.getLogger(__name__)

PAD, UNK = 0, 1          # ids of padding and of an unknown word or character; the vocabulary's start at 2
_P1, _P2, _B1, _B2 = 2**31 - 1, 2**31 - 19, 131, 137  # the two polynomial hashes: moduli and bases
_ZERO, _NINE = ord("0"), ord("9")

BILSTM_CARD = """
---
{{ card_data }}
---

# {title} for named entity recognition (a text-only baseline)

A word-level tagger of MAF's Table 2, trained with `maf train --model {name}` on the same
tokenized text as MAF: word embeddings{chars}, a BiLSTM and a CRF; no image.

    from maf_core import load_model
    model = load_model("DIRECTORY or Hub name")

Scores and settings: below, where the run wrote them.
"""


def normalize_word(word: str) -> str:
    """The form a word is looked up in: ASCII digits read as 0, at most MAX_WORD_CHARS characters
    (what maf_core.data gives the model)."""
    return "".join("0" if "0" <= c <= "9" else c for c in word[:MAX_WORD_CHARS])


def word_key(word: str) -> int:
    """The 62-bit hash of a normalized word's code points (`hash_words` computes the same on tensors)."""
    h1 = h2 = 0
    for c in word:
        x = ord(c)
        h1, h2 = (h1 * _B1 + x) % _P1, (h2 * _B2 + x) % _P2
    return h1 * 2**31 + h2


def hash_words(chars: torch.Tensor) -> torch.Tensor:
    """word_key of each word of a batch, shape: (B, W, C) code points (0 beyond the word) -> (B, W)."""
    chars = chars.long()
    chars = torch.where((chars >= _ZERO) & (chars <= _NINE), torch.full_like(chars, _ZERO), chars)
    h1 = h2 = torch.zeros(chars.shape[:-1], dtype=torch.long, device=chars.device)
    for c in range(chars.shape[-1]):
        x = chars[..., c]
        live = x > 0
        h1 = torch.where(live, (h1 * _B1 + x) % _P1, h1)
        h2 = torch.where(live, (h2 * _B2 + x) % _P2, h2)
    return h1 * 2**31 + h2


def build_vocabularies(words: list[list[str]]) -> tuple[list[str], list[str]]:
    """The train split's words (normalized) and their characters, most frequent first (ties in
    code-point order); DataError if two words share a hash (never seen; it would merge them)."""
    counts = Counter(normalize_word(w) for tweet in words for w in tweet if w)
    vocab = sorted(counts, key=lambda w: (-counts[w], w))
    chars = Counter(c for w, n in counts.items() for c in w for _ in range(n))
    keys = Counter(word_key(w) for w in vocab)
    clash = [w for w in vocab if keys[word_key(w)] > 1]
    if clash:
        raise DataError(f"the train split's words {clash[:4]} share a 62-bit hash; the word lookup cannot tell them "
                        "apart")
    return vocab, sorted(chars, key=lambda c: (-chars[c], c))


def vector_dimension(path: str | Path) -> int:
    """The dimension of a GloVe or word2vec text file, from its first vector (read_vectors, when the
    model is built, checks every line against it): fitting a config does not read the whole file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such word vectors file")
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's header
            if len(parts) >= 2:
                return len(parts) - 1
    raise DataError(f"{path}: no word vectors in it (GloVe or word2vec text format expected)")


def read_vectors(path: str | Path, wanted: set[str]) -> tuple[int, dict[str, list[float]]]:
    """(dimension, {word: vector}) of the words in `wanted` (and of their lowercase forms) from a
    GloVe or word2vec text file (word2vec's first line "count dim" is skipped); a line with another
    number of values than the first is a DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such word vectors file")
    found: dict[str, list[float]] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's header
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise DataError(f"{path}:{number}: expected a word and {dim} values, got {len(parts) - 1} values")
            if parts[0] in wanted:
                try:
                    found[parts[0]] = [float(x) for x in parts[1:]]
                except ValueError:
                    raise DataError(f"{path}:{number}: a value of {parts[0]!r} is not a number") from None
    if dim is None:
        raise DataError(f"{path}: no word vectors in it (GloVe or word2vec text format expected)")
    return dim, found


class CharCNN(nn.Module):
    """Ma & Hovy 2016 (section 2.1): character embeddings, dropout, a convolution of `char_hidden`
    filters of width `char_window`, max-pooled over the word's characters."""

    def __init__(self, config: MAFConfig, chars: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(chars, config.char_dim, padding_idx=PAD)
        self.dropout = nn.Dropout(config.word_dropout)
        self.conv = nn.Conv1d(config.char_dim, config.char_hidden, config.char_window,
                              padding=config.char_window // 2)
        scale = math.sqrt(3.0 / config.char_dim)  # U(±√(3/dim)), Ma & Hovy section 3.1
        nn.init.uniform_(self.embedding.weight, -scale, scale)
        with torch.no_grad():  # the padding character reads as the convolution's own zero padding
            self.embedding.weight[PAD].zero_()
        nn.init.xavier_uniform_(self.conv.weight)  # Glorot, zero bias (section 3.1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        # shape: char_ids (B, W, C) -> (B, W, filters)
        b, w, c = char_ids.shape
        x = self.dropout(self.embedding(char_ids.view(b * w, c))).transpose(1, 2)  # (B*W, char_dim, C)
        y = self.conv(x)[..., :c]                                                   # (B*W, filters, C)
        y = y.masked_fill((char_ids.view(b * w, 1, c) == PAD), torch.finfo(y.dtype).min)
        y = y.max(-1).values
        return y.masked_fill(y == torch.finfo(y.dtype).min, 0.0).view(b, w, -1)     # a padding word: 0


class CharLSTM(nn.Module):
    """Lample et al. 2016 (section 4.1): character embeddings read by a BiLSTM; the word's
    representation is the forward LSTM's last state and the backward one's first."""

    def __init__(self, config: MAFConfig, chars: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(chars, config.char_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(config.char_dim, config.char_hidden, batch_first=True, bidirectional=True)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        # shape: char_ids (B, W, C) -> (B, W, 2 * char_hidden)
        b, w, c = char_ids.shape
        lengths = (char_ids != PAD).sum(-1).view(-1)
        packed = pack_padded_sequence(self.embedding(char_ids.view(b * w, c)), lengths.clamp(min=1).cpu(),
                                      batch_first=True, enforce_sorted=False)
        _, (last, _) = self.lstm(packed)                            # last: (2, B*W, hidden)
        out = torch.cat([last[0], last[1]], dim=-1) * (lengths > 0).unsqueeze(-1)
        return out.view(b, w, -1)


class WordTagger(SavedModel):
    """What the three BiLSTM taggers share; a subclass names its character encoder (`char_encoder`
    in its recipe) and its settings. Called as MAF is: it reads `word_chars` and `word_mask`."""

    inputs = ("words",)
    attention_name = None
    options = ("word_vectors",)
    takes_text_scheme = True  # the recipes' IOBES is the text's default scheme (maf-pipe tokenize --scheme bioes)
    settings: dict = {}       # the recipe's MAFConfig values
    training: dict = {}       # the recipe's TrainConfig values

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        values = dict(architecture=cls.name, use_alignment=False, use_matching=False, text_only=True,
                      scheme="bioes", crf_over="words", bert_size="tiny", **cls.settings)
        values.update(overrides)
        return MAFConfig(**values)

    @classmethod
    def config_from_options(cls, word_vectors: str | None = None, **_) -> MAFConfig:
        return cls.default_config(word_vectors=word_vectors)

    @classmethod
    def check_config(cls, config: MAFConfig) -> list[str]:
        problems = []
        if config.use_alignment or config.use_matching or not config.text_only:
            problems.append(f"architecture {config.architecture} reads no image (expected use_alignment and "
                            "use_matching false, text_only true)")
        if config.bert is not None:
            problems.append(f"architecture {config.architecture} reads words, not word pieces: no bert")
        if config.crf_over != "words":
            problems.append(f"architecture {config.architecture} tags words: crf_over words")
        return problems

    @classmethod
    def fit_to_text(cls, config: MAFConfig, train_words: list[list[str]]) -> MAFConfig:
        """The vocabularies of the train split; the vectors file's sha256 and dimension."""
        words, chars = build_vocabularies(train_words)
        values = dict(word_vocab=words, char_vocab=chars)
        if config.word_vectors is not None:
            values.update(word_dim=vector_dimension(config.word_vectors),
                          word_vectors_sha256=file_sha256(config.word_vectors))
        else:
            logger.warning("word embeddings start random (no --word-vectors): fine for tests and the offline demo; "
                           "the papers' scores need pretrained vectors (GloVe, word2vec text format)")
        return replace(config, **values)

    @classmethod
    def train_defaults(cls, preset: str) -> dict:
        return dict(cls.training)

    @classmethod
    def autocast_by_default(cls, config: MAFConfig) -> bool:
        return False  # small LSTMs: fp32

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        self._check_own(config)
        if config.word_vocab is None or config.char_vocab is None:
            raise ValueError(f"{type(self).__name__}: the config has no word_vocab and char_vocab (fit it to the "
                             "text first: maf_core.models.fit_to_text)")
        self.config = config
        words, chars = config.word_vocab, config.char_vocab
        self.embedding = nn.Embedding(len(words) + 2, config.word_dim, padding_idx=PAD)
        scale = math.sqrt(3.0 / config.word_dim)  # U(±√(3/dim)): Ma & Hovy 3.1, NCRF++'s random_embedding
        nn.init.uniform_(self.embedding.weight, -scale, scale)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        self.chars = {"cnn": CharCNN, "lstm": CharLSTM}[config.char_encoder](config, len(chars) + 2) \
            if config.char_encoder is not None else None
        char_width = 0 if self.chars is None else config.char_hidden * (2 if config.char_encoder == "lstm" else 1)
        self.dropout = nn.Dropout(config.word_dropout)
        self.lstm = nn.LSTM(config.word_dim + char_width, config.lstm_hidden, batch_first=True, bidirectional=True)
        self.emission = nn.Linear(2 * config.lstm_hidden, len(config.crf_tags))
        self.crf = CRF(len(config.crf_tags))
        # the lookups, derived from the config's vocabularies (not saved with the weights)
        keys = torch.tensor([word_key(w) for w in words], dtype=torch.long)
        order = torch.argsort(keys)
        self.register_buffer("word_keys", keys[order], persistent=False)
        self.register_buffer("word_ids", order + 2, persistent=False)
        codes = torch.tensor([ord(c) for c in chars], dtype=torch.long)
        char_order = torch.argsort(codes)
        self.register_buffer("char_codes", codes[char_order], persistent=False)
        self.register_buffer("char_ids", char_order + 2, persistent=False)

    def init_new(self) -> None:
        """A new model's word embeddings from --word-vectors where the file has the word (or its
        lowercase form), checked against the sha256 its config recorded."""
        cfg = self.config
        if cfg.word_vectors is None:
            return
        sha = file_sha256(cfg.word_vectors)
        if cfg.word_vectors_sha256 is not None and sha != cfg.word_vectors_sha256:
            raise DataError(f"{cfg.word_vectors}: sha256 {sha[:12]}, but the run recorded "
                            f"{cfg.word_vectors_sha256[:12]}; pass the file the run was started with")
        words = cfg.word_vocab
        dim, vectors = read_vectors(cfg.word_vectors, set(words) | {w.lower() for w in words})
        if dim != cfg.word_dim:
            raise DataError(f"{cfg.word_vectors}: {dim}-dimensional vectors, the model's word_dim is {cfg.word_dim}")
        hits = 0
        with torch.no_grad():
            for i, word in enumerate(words):
                vector = vectors.get(word, vectors.get(word.lower()))
                if vector is not None:
                    self.embedding.weight[i + 2] = torch.tensor(vector)
                    hits += 1
        logger.info("%s: vectors for %d of the train split's %d words (the others U(±%.3f))", cfg.word_vectors, hits,
                    len(words), math.sqrt(3.0 / cfg.word_dim))

    def lookup(self, word_chars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids (B, W) and character ids (B, W, C) of a batch's code points: PAD where there is no
        word or character, UNK for one outside the train split's vocabulary."""
        keys = hash_words(word_chars)
        at = torch.searchsorted(self.word_keys, keys).clamp(max=max(0, len(self.word_keys) - 1))
        known = self.word_keys[at] == keys if len(self.word_keys) else torch.zeros_like(keys, dtype=torch.bool)
        word_ids = torch.where(known, self.word_ids[at], torch.full_like(keys, UNK))
        word_ids = word_ids.masked_fill(word_chars[..., 0] == 0, PAD)
        codes = word_chars.long()
        codes = torch.where((codes >= _ZERO) & (codes <= _NINE), torch.full_like(codes, _ZERO), codes)
        spot = torch.searchsorted(self.char_codes, codes).clamp(max=max(0, len(self.char_codes) - 1))
        char_known = self.char_codes[spot] == codes
        char_ids = torch.where(char_known, self.char_ids[spot], torch.full_like(codes, UNK))
        return word_ids, char_ids.masked_fill(codes == 0, PAD)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                word_starts: torch.Tensor | None = None, word_mask: torch.Tensor | None = None,
                regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None, decode: bool = False,
                generator: torch.Generator | None = None, negatives=None, shard: BatchShard | None = None,
                word_chars: torch.Tensor | None = None) -> MAFOutput:
        """word_chars (B, W, C) code points and word_mask (B, W), a prefix of each row; tags (B, W)
        when training. The pieces and the image are not read. The loss is the CRF's NLL, the mean
        over tweets (with `shard`, this process's share of the global batch's, times the processes)."""
        if word_chars is None or word_mask is None:
            raise ValueError(f"{type(self).__name__} reads word_chars and word_mask (maf_core.data.collate)")
        world, total = (shard.world, shard.total) if shard is not None else (1, word_chars.shape[0])
        mask = word_mask.bool()
        hidden = self.encode(word_chars, mask)
        emissions = at_least_fp32(self.emission(self.dropout(hidden)))            # (B, W, K)
        loss = None
        if tags is not None:
            loss = -self.crf(emissions, tags.long(), mask=mask, reduction="sum") * (world / total)
        decoded = self.crf.decode(emissions, mask=mask) if decode else None
        return MAFOutput(loss, loss, None, None, emissions, None, None, decoded)

    def encode(self, word_chars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The word BiLSTM's states of a batch, before the output dropout: word_chars (B, W, C) code
        points and mask (B, W) -> (B, W, 2 * lstm_hidden)."""
        word_ids, char_ids = self.lookup(word_chars)
        x = self.embedding(word_ids)                                               # (B, W, word_dim)
        if self.chars is not None:
            x = torch.cat([x, self.chars(char_ids)], dim=-1)                       # (B, W, word_dim + chars)
        lengths = mask.sum(1)
        packed = pack_padded_sequence(self.dropout(x), lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return hidden

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"word embeddings": [self.embedding], "characters": [self.chars],
                              "bilstm": [self.lstm], "emission+crf": [self.emission, self.crf]})


def _card(title: str, name: str, chars: str) -> str:
    return BILSTM_CARD.replace("{title}", title).replace("{name}", name).replace("{chars}", chars)


class BiLSTMCRF(WordTagger, library_name="maf", model_card_template=_card("BiLSTM-CRF", "bilstm-crf", ""),
                tags=["bilstm-crf", *TASK_TAGS]):
    """Huang et al. 2015: word embeddings → BiLSTM → CRF (their spelling and context features,
    connected to the output, are left out)."""

    name = "bilstm-crf"
    title = "BiLSTM-CRF"
    card, card_tags = _card("BiLSTM-CRF", "bilstm-crf", ""), ["bilstm-crf", *TASK_TAGS]
    recipe = "docs/model.md, BiLSTM-CRF: Huang et al. 2015, sections 4.2-4.3"
    settings = dict(word_dim=50, lstm_hidden=300, word_dropout=0.0, char_encoder=None)
    training = dict(optimizer="sgd", lr=0.1, momentum=0.0, lr_decay=0.0, clip=5.0, weight_decay=0.0,
                    batch_size=10, epochs=10, batching="random")


class CNNBiLSTMCRF(WordTagger, library_name="maf",
                   model_card_template=_card("CNN-BiLSTM-CRF", "cnn-bilstm-crf", " with a character CNN"),
                   tags=["cnn-bilstm-crf", *TASK_TAGS]):
    """Ma & Hovy 2016: [word embedding; char CNN] → BiLSTM → CRF."""

    name = "cnn-bilstm-crf"
    title = "CNN-BiLSTM-CRF"
    card, card_tags = _card("CNN-BiLSTM-CRF", "cnn-bilstm-crf", " with a character CNN"), \
        ["cnn-bilstm-crf", *TASK_TAGS]
    recipe = "docs/model.md, CNN-BiLSTM-CRF: Ma & Hovy 2016, sections 2.1-3.3 and table 1"
    settings = dict(word_dim=100, char_encoder="cnn", char_dim=30, char_hidden=30, char_window=3, lstm_hidden=200,
                    word_dropout=0.5)
    training = dict(optimizer="sgd", lr=0.015, momentum=0.9, lr_decay=0.05, clip=5.0, weight_decay=0.0,
                    batch_size=10, epochs=50, batching="random")


class HBiLSTMCRF(WordTagger, library_name="maf",
                 model_card_template=_card("HBiLSTM-CRF", "hbilstm-crf", " with a character BiLSTM"),
                 tags=["hbilstm-crf", *TASK_TAGS]):
    """Lample et al. 2016: [word embedding; char BiLSTM] → BiLSTM → CRF."""

    name = "hbilstm-crf"
    title = "HBiLSTM-CRF"
    card, card_tags = _card("HBiLSTM-CRF", "hbilstm-crf", " with a character BiLSTM"), \
        ["hbilstm-crf", *TASK_TAGS]
    recipe = "docs/model.md, HBiLSTM-CRF: Lample et al. 2016 and glample/tagger's train.py defaults"
    settings = dict(word_dim=100, char_encoder="lstm", char_dim=25, char_hidden=25, lstm_hidden=100,
                    word_dropout=0.5)
    training = dict(optimizer="sgd", lr=0.005, momentum=0.0, lr_decay=0.0, clip=5.0, weight_decay=0.0,
                    batch_size=1, epochs=100, batching="random")
