"""BERT with a softmax decoder, the "BERT" row of MAF's Table 2 (copied there from Yu et al. 2020):
the text encoder, dropout, a linear layer to the tags, and cross-entropy per position; no CRF,
no image.

    BERT → dropout → T → Linear(d → tags) → softmax per position (argmax when tagging)

As jefferyYu/UMT's `BertForTokenClassification` builds it (my_bert/bichannel_modeling.py
1061-1124; the same class is in xubodhu/MAF's mybert/): dropout of `hidden_dropout_prob` on the
last layer, Linear(hidden → labels), CrossEntropyLoss over the positions of the attention mask.
With `crf_over = "pieces"` (its default here) the labels are those positions' labels: a word's
tag on its first piece, X on the pieces after it, [CLS] and [SEP], as UMT's data processing
gives them (run_mtmner_crf.py 359-395); with "words", the first piece of each word only (Devlin
et al. 2019, section 5.3). Its training settings in UMT's runs were not found (the class is not
wired into run_mtmner_crf.py); this project trains it as UMT is trained. Every value and its
source: docs/model.md, "BERT-softmax".
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maf_core.config import BERT_SIZES, MAFConfig
from maf_core.distributed import BatchShard
from maf_core.models.base import (
    TASK_TAGS,
    MAFOutput,
    SavedModel,
    at_least_fp32,
    bert_init,
    count_by_part,
    gather_words,
    piece_targets,
)

BERT_SOFTMAX_CARD = """
---
{{ card_data }}
---

# BERT-softmax for named entity recognition (a text-only baseline)

A text encoder with a linear layer and a softmax per word, no CRF and no image: the "BERT" row of
MAF's Table 2 (Yu et al. 2020's baseline), trained with `maf train --model bert-softmax` on the
same tokenized text as MAF.

    from maf_core import load_model
    model = load_model("DIRECTORY or Hub name")

Scores and settings: below, where the run wrote them.
"""
BERT_SOFTMAX_TAGS = ["bert-softmax", *TASK_TAGS]


def bert_softmax_settings() -> dict:
    """The settings of BERT-softmax as jefferyYu/UMT's BertForTokenClassification with UMT's data:
    BIO tags with X, [CLS], [SEP] per piece (cross-entropy over every piece of the attention
    mask), init_bert_weights for the classifier, dropout on BERT's last layer, no pooler (nothing
    reads it). No image: text_only, and CA and CM (MAF's) off. A text tokenized BIOES is taken as
    it is."""
    return dict(architecture=BertSoftmax.name, use_alignment=False, use_matching=False, text_only=True,
                scheme="bio", crf_over="pieces", init="bert", dropout_on="text", pooling="first")


class BertSoftmax(SavedModel, library_name="maf", model_card_template=BERT_SOFTMAX_CARD, tags=BERT_SOFTMAX_TAGS):
    """BERT + linear + softmax cross-entropy (`config.architecture` "bert-softmax"); called as MAF is
    (the image inputs are accepted and not read)."""

    name = "bert-softmax"
    title = "BERT-softmax"
    inputs = ("pieces",)
    attention_name = None
    card, card_tags = BERT_SOFTMAX_CARD, BERT_SOFTMAX_TAGS
    options = ("bert", "bert_size")
    recipe = ("docs/model.md, BERT-softmax: jefferyYu/UMT's BertForTokenClassification; trained as UMT "
              "(its own settings were not found)")
    takes_text_scheme = True

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        size = BERT_SIZES.get(overrides.get("bert_size", "base"), BERT_SIZES["base"])
        values = dict(bert_softmax_settings(), bert_size="base", hidden_size=size["hidden_size"], max_length=128)
        values.update(overrides)
        return MAFConfig(**values)

    @classmethod
    def config_from_options(cls, bert: str | None = None, bert_size: str = "base", **_) -> MAFConfig:
        return cls.default_config(bert=bert, bert_size=bert_size)

    @classmethod
    def check_config(cls, config: MAFConfig) -> list[str]:
        if config.use_alignment or config.use_matching or not config.text_only:
            return [f"architecture {config.architecture} reads no image (expected use_alignment and use_matching "
                    "false, text_only true)"]
        return []

    @classmethod
    def train_defaults(cls, preset: str) -> dict:
        """As UMT is trained (BertAdam, random batches of 32): its own settings were not found."""
        return {"optimizer": "bertadam", "batching": "random", "batch_size": 32}

    @classmethod
    def autocast_by_default(cls, config: MAFConfig) -> bool:
        """fp32, as UMT's code runs its models unless --fp16."""
        return False

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.emission = nn.Linear(config.hidden_size, len(config.crf_tags))   # classifier
        if config.init == "bert":
            self.emission.apply(bert_init)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor,
                word_mask: torch.Tensor, regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None, decode: bool = False,
                generator: torch.Generator | None = None, negatives=None,
                shard: BatchShard | None = None, word_chars: torch.Tensor | None = None) -> MAFOutput:
        """MAF.forward's arguments (the image ones unused): input_ids, attention_mask (B, L); word_starts,
        word_mask (B, W); tags (B, W) when training. The loss is the cross-entropy summed over each
        tweet's positions, the mean over tweets (as the CRF's NLL; with `shard`, this process's
        share of the global batch's mean, times the processes)."""
        cfg = self.config
        world, total = (shard.world, shard.total) if shard is not None else (1, input_ids.shape[0])
        mask = attention_mask.bool()
        text = self.encode_pieces(input_ids, attention_mask)                      # (B, L, d)
        over_words = cfg.crf_over == "words"
        positions = word_mask.bool() if over_words else mask                      # (B, n)
        # shape: (B, n, K) over words (first pieces) or pieces
        scores = at_least_fp32(self.emission(gather_words(text, word_starts, word_mask) if over_words else text))
        loss = None
        if tags is not None:
            targets = (tags if over_words else piece_targets(tags, word_starts, word_mask, mask, len(cfg.tags))).long()
            per_position = F.cross_entropy(scores.transpose(1, 2), targets, reduction="none")  # (B, n)
            loss = (per_position * positions).sum() * (world / total)
        emissions = scores if over_words else gather_words(scores, word_starts, word_mask)  # (B, W, K)
        decoded = self._decode(emissions, word_mask) if decode else None
        return MAFOutput(loss, loss, None, None, emissions, None, None, decoded)

    def _decode(self, emissions: torch.Tensor, word_mask: torch.Tensor) -> list[list[int]]:
        """The most probable of the scheme's tags per word, at its first piece (the piece states X,
        [CLS], [SEP] and [PAD] label other positions: a first piece is never trained on them)."""
        best = emissions[..., :len(self.config.tags)].argmax(-1)  # shape: (B, W)
        return [row[:n] for row, n in zip(best.tolist(), word_mask.sum(1).tolist())]

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"bert": [self.bert], "classifier": [self.emission]})
