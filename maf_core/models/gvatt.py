"""GVATT-BERT-CRF: the visual attention model of Lu et al. (ACL 2018, "Visual attention model for
name tagging in multimodal social media") on BERT, a row of MAF's Table 2 (copied there from Yu et
al. 2020), on the same text, store and CRF as MAF.

    BERT → dropout → T (pieces);  q = T[CLS], the sentence vector
    regions → Linear(C → d) → V (the store's 49 regions stand in for the original's 7×7 grid)
    visual attention, queried by the sentence:
        e_i = w_a · tanh(W_q q + b_q + W_v v_i),  α = softmax(e) over the regions,  v_c = Σ α_i v_i
    modulation gate, per piece h_t:
        β_v = σ(W_v h_t + U_v v_c + b_v),  β_w = σ(W_w h_t + U_w v_c + b_w)
        m_t = tanh(W_m h_t + U_m v_c + b_m),  w_t = β_w ⊙ h_t + β_v ⊙ m_t   (visually tuned)
    emissions E = W_c w_t → CRF

Lu et al. released no code and their method section could not be read: the attention follows
the authors' slides (Bahdanau et al.'s additive attention over the convolutional regions,
queried by the sentence; a modulation gate before the CRF) and the gate equations are the best
description found, **unverified**; so are the BERT variant's settings (the UMT paper's, not
found): it is built and trained as UMT-BERT-CRF here. Every value and its source: docs/model.md,
"GVATT-BERT-CRF". A tweet whose image status is not ok has no region to attend to: v_c = 0, so
its outputs depend on its text alone; no other photo stands in for it.
"""
from __future__ import annotations

import torch
from torch import nn

from maf_core.config import MAFConfig
from maf_core.crf import CRF
from maf_core.distributed import BatchShard
from maf_core.models.base import (
    TASK_TAGS,
    MAFOutput,
    TrainedAsUMT,
    at_least_fp32,
    bert_init,
    count_by_part,
    crf_outputs,
    gather_words,
    masked_softmax,
    present_regions,
)
from maf_core.models.bilstm import HBiLSTMCRF

GVATT_CARD = """
---
{{ card_data }}
---

# GVATT-BERT-CRF for multimodal named entity recognition

The visual attention model of Lu et al. (ACL 2018) on BERT: attention over the image regions
queried by the sentence, then a modulation gate per word before the CRF. Trained with
`maf train --model gvatt-bert-crf` on the same tokenized text and image store as MAF. Its
equations are the best description found, not the paper's own (unverified; docs/model.md).

    from maf_core.models import load_model
    model = load_model("DIRECTORY or Hub name")

Scores and settings: below, where the run wrote them.
"""
GVATT_TAGS = ["gvatt", *TASK_TAGS]


def gvatt_settings(name: str = "gvatt-bert-crf") -> dict:
    """GVATT-BERT-CRF's settings, those of UMT-BERT-CRF's released code (the UMT paper's BERT
    variants are unverified): BIO tags with X, [CLS], [SEP] on a CRF over every piece, dropout on
    BERT's last layer, init_bert_weights for every layer after BERT. CA and CM (MAF's) are off; the
    sentence vector is the first piece's state, so the encoder is built without BERT's pooler."""
    return dict(architecture=name, use_alignment=False, use_matching=False, text_only=False, scheme="bio",
                crf_over="pieces", init="bert", dropout_on="text", pooling="first")


class VisualAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015) over the regions, queried by one vector per tweet."""

    def __init__(self, query_dim: int, region_dim: int, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, hidden)                 # W_q, b_q
        self.key = nn.Linear(region_dim, hidden, bias=False)      # W_v
        self.score = nn.Linear(hidden, 1, bias=False)             # w_a (a bias would cancel in the softmax)

    def forward(self, query: torch.Tensor, regions: torch.Tensor,
                region_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, q), regions (B, R, r), region_mask (B, R) -> v_c (B, r) and α (B, R)."""
        # shape: (B, 1, h) + (B, R, h) -> (B, R, h) -> (B, R)
        scores = self.score(torch.tanh(self.query(query).unsqueeze(1) + self.key(regions))).squeeze(-1)
        weights = masked_softmax(scores, region_mask)             # α; all 0 without an image
        return (weights.unsqueeze(-1) * regions).sum(1), weights  # v_c, shape: (B, r)


class ModulationGate(nn.Module):
    """w_t = β_w ⊙ h_t + β_v ⊙ tanh(W_m h_t + U_m v_c + b_m): how much of the word and how much of
    the visual context each dimension of the visually tuned word keeps (W_x h + U_x v + b_x as one
    Linear over [h; v])."""

    def __init__(self, word_dim: int, visual_dim: int) -> None:
        super().__init__()
        self.visual_gate = nn.Linear(word_dim + visual_dim, word_dim)   # β_v
        self.word_gate = nn.Linear(word_dim + visual_dim, word_dim)     # β_w
        self.merge = nn.Linear(word_dim + visual_dim, word_dim)         # m_t

    def forward(self, words: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """words (B, n, d), context v_c (B, r) -> the visually tuned words (B, n, d)."""
        both = torch.cat([words, context.unsqueeze(1).expand(-1, words.shape[1], -1)], dim=-1)  # (B, n, d + r)
        return torch.sigmoid(self.word_gate(both)) * words + \
            torch.sigmoid(self.visual_gate(both)) * torch.tanh(self.merge(both))


class GvattBertCRF(TrainedAsUMT, library_name="maf", model_card_template=GVATT_CARD, tags=GVATT_TAGS):
    """GVATT-BERT-CRF (`config.architecture` "gvatt-bert-crf"); called as MAF is."""

    name = "gvatt-bert-crf"
    title = "GVATT-BERT-CRF"
    inputs = ("pieces", "regions")
    attention_name = "sentence-to-image"
    card, card_tags = GVATT_CARD, GVATT_TAGS
    recipe = ("docs/model.md, GVATT-BERT-CRF: Lu et al. 2018 (equations unverified) on BERT, built and trained as "
              "UMT-BERT-CRF (the UMT paper's settings for it were not found)")

    @classmethod
    def settings(cls) -> dict:
        return gvatt_settings(cls.name)

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"bert": [self.bert], "visual attention": [self.region_projection, self.attention],
                              "modulation gate": [self.gate], "emission+crf": [self.emission, self.crf]})

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert
        self.config = config
        d = config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.region_projection = nn.Linear(config.image_dim, d)   # the store's regions into BERT's width
        self.attention = VisualAttention(d, d, d)
        self.gate = ModulationGate(d, d)
        self.emission = nn.Linear(d, len(config.crf_tags))
        self.crf = CRF(len(config.crf_tags))
        if config.init == "bert":  # every layer after BERT but the CRF, as UMT's init_bert_weights
            for part in (self.region_projection, self.attention, self.gate, self.emission):
                part.apply(bert_init)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor,
                word_mask: torch.Tensor, regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None, decode: bool = False,
                generator: torch.Generator | None = None, negatives=None,
                shard: BatchShard | None = None, word_chars: torch.Tensor | None = None) -> MAFOutput:
        """MAF.forward's arguments: input_ids, attention_mask (B, L); word_starts, word_mask (B, W);
        regions (B, R, C) and image_ok (B,) from the store; tags (B, W) when training. `pooled`,
        `generator`, `negatives` and `word_chars` are other models' and unused; with `shard` the
        loss is this process's share of the global batch's mean, times the processes
        (maf_core.distributed)."""
        cfg = self.config
        world, total = (shard.world, shard.total) if shard is not None else (1, input_ids.shape[0])
        mask = attention_mask.bool()
        text = self.encode_pieces(input_ids, attention_mask)                      # (B, L, d)
        if regions is None or image_ok is None:
            raise ValueError("GVATT needs regions and image_ok from the feature store")
        regions, image_ok, region_mask = present_regions(regions, image_ok, text.dtype)  # (B, R, C), (B, R)
        context, weights = self.attention(text[:, 0], self.region_projection(regions), region_mask)  # v_c (B, d)
        tuned = self.gate(text, context)                                          # (B, L, d)

        over_words = cfg.crf_over == "words"
        crf_mask = word_mask.bool() if over_words else mask
        emissions = at_least_fp32(self.emission(gather_words(tuned, word_starts, word_mask) if over_words
                                                 else tuned))
        loss, decoded, emissions = crf_outputs(self.crf, emissions, crf_mask, tags, word_starts, word_mask, mask, cfg,
                                               world / total, decode)
        # one sentence-level α per tweet, the same for each piece: (B, 1 head, L, R) as the readers take it
        attention = weights[:, None, None, :].expand(-1, 1, input_ids.shape[1], -1)
        return MAFOutput(loss, loss, None, None, emissions, None, attention, decoded)


def sentence_states(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A BiLSTM's sentence vector: its forward half's state at the last word and its backward half's
    at the first, shape: hidden (B, W, 2h), mask (B, W) -> (B, 2h)."""
    half = hidden.shape[-1] // 2
    last = (mask.sum(1) - 1).clamp(min=0)
    forward = hidden[torch.arange(hidden.shape[0], device=hidden.device), last, :half]
    return torch.cat([forward, hidden[:, 0, half:]], dim=-1)


class GvattHBiLSTMCRF(HBiLSTMCRF, library_name="maf", model_card_template=GVATT_CARD, tags=GVATT_TAGS):
    """GVATT-HBiLSTM-CRF (`config.architecture` "gvatt-hbilstm-crf"): Lu et al.'s model on its own
    text encoder, HBiLSTM-CRF (maf_core/models/bilstm.py: words and characters, a word BiLSTM);
    the query is the BiLSTM's sentence vector, the gate acts on its states, then its CRF."""

    name = "gvatt-hbilstm-crf"
    title = "GVATT-HBiLSTM-CRF"
    inputs = ("words", "regions")
    attention_name = "sentence-to-image"
    card, card_tags = GVATT_CARD, GVATT_TAGS
    recipe = ("docs/model.md, GVATT-HBiLSTM-CRF: Lu et al. 2018 (equations unverified) on HBiLSTM-CRF, with its "
              "recipe (Lample et al. 2016; Lu et al.'s settings were not found)")

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        """HBiLSTM-CRF's settings with the image: the store's 49 regions of 2048 channels."""
        return super().default_config(**{"text_only": False, "image_dim": 2048, "num_regions": 49, **overrides})

    @classmethod
    def check_config(cls, config: MAFConfig) -> list[str]:
        problems = [p for p in super().check_config(config) if "reads no image" not in p]
        if config.use_alignment or config.use_matching or config.text_only:
            problems.append(f"architecture {config.architecture} with CA, CM or text_only (MAF's; expected "
                            "use_alignment and use_matching false, text_only false)")
        return problems

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__(config, bert)
        d = 2 * config.lstm_hidden
        self.region_projection = nn.Linear(config.image_dim, d)   # the store's regions into the BiLSTM's width
        self.attention = VisualAttention(d, d, d)
        self.gate = ModulationGate(d, d)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                word_starts: torch.Tensor | None = None, word_mask: torch.Tensor | None = None,
                regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None, decode: bool = False,
                generator: torch.Generator | None = None, negatives=None, shard: BatchShard | None = None,
                word_chars: torch.Tensor | None = None) -> MAFOutput:
        """word_chars (B, W, C), word_mask (B, W), regions (B, R, C) and image_ok (B,); tags (B, W) when
        training; the pieces are not read (input_ids, when given, only sizes the attention output
        as the readers take it: per piece)."""
        if word_chars is None or word_mask is None or regions is None or image_ok is None:
            raise ValueError("GVATT-HBiLSTM-CRF reads word_chars, word_mask, regions and image_ok")
        world, total = (shard.world, shard.total) if shard is not None else (1, word_chars.shape[0])
        mask = word_mask.bool()
        hidden = self.dropout(self.encode(word_chars, mask))                      # (B, W, 2h)
        regions, image_ok, region_mask = present_regions(regions, image_ok, hidden.dtype)  # (B, R, C), (B, R)
        context, weights = self.attention(sentence_states(hidden, mask), self.region_projection(regions),
                                          region_mask)                             # v_c (B, 2h), α (B, R)
        emissions = at_least_fp32(self.emission(self.gate(hidden, context)))       # (B, W, K)
        loss = None
        if tags is not None:
            loss = -self.crf(emissions, tags.long(), mask=mask, reduction="sum") * (world / total)
        decoded = self.crf.decode(emissions, mask=mask) if decode else None
        positions = input_ids.shape[1] if input_ids is not None else mask.shape[1]
        attention = weights[:, None, None, :].expand(-1, 1, positions, -1)
        return MAFOutput(loss, loss, None, None, emissions, None, attention, decoded)

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"word embeddings": [self.embedding], "characters": [self.chars], "bilstm": [self.lstm],
                              "visual attention": [self.region_projection, self.attention],
                              "modulation gate": [self.gate], "emission+crf": [self.emission, self.crf]})
