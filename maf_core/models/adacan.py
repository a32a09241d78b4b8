"""AdaCAN-BERT-CRF: the adaptive co-attention network of Zhang et al. (AAAI 2018, "Adaptive
co-attention network for named entity recognition in tweets") on BERT, a row of MAF's Table 2
(copied there from Yu et al. 2020), on the same text, store and CRF as MAF.

    BERT → dropout → H = (h_1 .. h_n) (pieces)
    regions → tanh(Linear(C → d)) → V = (v_1 .. v_49)   (the original's VGG 7×7 grid: the store's regions)
    word-guided visual attention:   z_{t,i} = tanh([W_h h_t + b_h ; W_v v_i]),  α_t = softmax_i(w_α z_{t,i} + b_α)
                                    ṽ_t = Σ_i α_{t,i} v_i
    image-guided textual attention: z'_{t,j} = tanh([W_ṽ ṽ_t + b_ṽ ; W_H h_j]),  β_t = softmax_j(w_β z'_{t,j} + b_β)
                                    h̃_t = Σ_j β_{t,j} h_j
    gated multimodal fusion:        h_v = tanh(W_1 ṽ_t + b_1),  h_w = tanh(W_2 h̃_t + b_2)
                                    g_t = σ(w_g [h_v ; h_w] + b_g)  (one number),  m_t = g_t h_v + (1 − g_t) h_w
    filtration gate:                s_t = σ(w_s [W_sh h_t ; W_sm m_t + b_sm] + b_s)  (one number)
                                    u_t = s_t tanh(W_u m_t + b_u),  E_t = W_o [h_t ; u_t] + b_o → CRF

The equations as monologg/NER-Multimodal-pytorch reads the paper (its model.py; the paper itself
could not be read), where ⊕ joins a vector to each column of a matrix by concatenation, as the
official code (jinlanfu/NERmultimodal) also does. Concatenated under the tanh, a score is a sum
of a term of the query alone and a term of the key alone; the query's term is the same for every
key and cancels in the softmax. So α_t is the same for every word and β_t for every ṽ_t: both
attentions pool by their keys alone, and ṽ, h̃, h_v, h_w, g and m are one per tweet. This module
computes exactly that and builds no weight that cannot learn (W_h, b_h, the query halves of w_α
and w_β, and their biases get no gradient in the equations as written); tests/test_adacan.py
checks it against the equations computed as written. Where the official code differs from the
paper (its fusion gate reads h_v + h_w; its filtration gate reads the fused feature alone; its
optimizer): docs/model.md, "AdaCAN-BERT-CRF". The UMT paper's BERT variant is built and trained
as UMT-BERT-CRF here (its settings were not found). A tweet whose image status is not ok has no
region to attend to: ṽ = 0, so its outputs depend on its text alone.
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
from maf_core.models.bilstm import CNNBiLSTMCRF

ADACAN_CARD = """
---
{{ card_data }}
---

# AdaCAN-BERT-CRF for multimodal named entity recognition

The adaptive co-attention network of Zhang et al. (AAAI 2018) on BERT: word-guided visual
attention, image-guided textual attention, gated multimodal fusion and a filtration gate before
the CRF. Trained with `maf train --model adacan-bert-crf` on the same tokenized text and image
store as MAF (docs/model.md says which equations it follows).

    from maf_core.models import load_model
    model = load_model("DIRECTORY or Hub name")

Scores and settings: below, where the run wrote them.
"""
ADACAN_TAGS = ["adacan", *TASK_TAGS]


def adacan_settings(name: str = "adacan-bert-crf") -> dict:
    """AdaCAN-BERT-CRF's settings, those of UMT-BERT-CRF's released code (the UMT paper's BERT
    variants are unverified): BIO tags with X, [CLS], [SEP] on a CRF over every piece, dropout on
    BERT's last layer; but the layers after BERT keep PyTorch's initialisation, as
    monologg/NER-Multimodal-pytorch's (with init_bert_weights' N(0, 0.02) the image's path, five
    small layers deep, did not learn in a tiny model's 120 steps; with PyTorch's it did). CA and
    CM (MAF's) are off and nothing reads a sentence vector, so the encoder is built without
    BERT's pooler."""
    return dict(architecture=name, use_alignment=False, use_matching=False, text_only=False, scheme="bio",
                crf_over="pieces", init="default", dropout_on="text", pooling="first")


class KeyAttention(nn.Module):
    """softmax_k(w · tanh(W x_k)) over the keys x_k, and their weighted sum: an attention of the
    form softmax_k(w [a(query) ; b(x_k)] + c) after its query's share, equal for every key, is gone."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, hidden, bias=False)    # W_v (or W_H)
        self.score = nn.Linear(hidden, 1, bias=False)    # the keys' half of w_α (or w_β)

    def forward(self, keys: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys (B, K, dim), mask (B, K) -> their weighted sum (B, dim) and the weights (B, K)."""
        weights = masked_softmax(self.score(torch.tanh(self.key(keys))).squeeze(-1), mask)  # (B, K)
        return (weights.unsqueeze(-1) * keys).sum(1), weights


class GatedFusion(nn.Module):
    """GMF: m = g h_v + (1 − g) h_w with h_v = tanh(W_1 ṽ + b_1), h_w = tanh(W_2 h̃ + b_2) and one
    gate g = σ(w_g [h_v ; h_w] + b_g)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.visual = nn.Linear(dim, dim)
        self.textual = nn.Linear(dim, dim)
        self.gate = nn.Linear(2 * dim, 1)

    def forward(self, visual: torch.Tensor, textual: torch.Tensor) -> torch.Tensor:
        h_v, h_w = torch.tanh(self.visual(visual)), torch.tanh(self.textual(textual))
        g = torch.sigmoid(self.gate(torch.cat([h_v, h_w], dim=-1)))   # shape: (..., 1)
        return g * h_v + (1 - g) * h_w


class FiltrationGate(nn.Module):
    """E_t = W_o [h_t ; s_t tanh(W_u m + b_u)] with s_t = σ(w_s [W_sh h_t ; W_sm m + b_sm] + b_s): how
    much of the fused feature each word keeps, then the tag scores."""

    def __init__(self, dim: int, tags: int) -> None:
        super().__init__()
        self.text = nn.Linear(dim, dim, bias=False)          # W_sh
        self.multimodal = nn.Linear(dim, dim)                # W_sm, b_sm
        self.gate = nn.Linear(2 * dim, 1)                    # w_s, b_s
        self.reserved = nn.Linear(dim, dim)                  # W_u, b_u
        self.output = nn.Linear(2 * dim, tags)               # W_o, b_o

    def forward(self, words: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """words (B, n, d), the fused feature m (B, d) -> tag scores (B, n, tags)."""
        fused = fused.unsqueeze(1).expand(-1, words.shape[1], -1)                     # (B, n, d)
        s = torch.sigmoid(self.gate(torch.cat([self.text(words), self.multimodal(fused)], dim=-1)))  # (B, n, 1)
        return self.output(torch.cat([words, s * torch.tanh(self.reserved(fused))], dim=-1))


class AdacanBertCRF(TrainedAsUMT, library_name="maf", model_card_template=ADACAN_CARD, tags=ADACAN_TAGS):
    """AdaCAN-BERT-CRF (`config.architecture` "adacan-bert-crf"); called as MAF is."""

    name = "adacan-bert-crf"
    title = "AdaCAN-BERT-CRF"
    inputs = ("pieces", "regions")
    attention_name = "word-guided visual"
    card, card_tags = ADACAN_CARD, ADACAN_TAGS
    recipe = ("docs/model.md, AdaCAN-BERT-CRF: Zhang et al. 2018 as monologg/NER-Multimodal-pytorch reads it, on "
              "BERT, built and trained as UMT-BERT-CRF (the UMT paper's settings for it were not found)")

    @classmethod
    def settings(cls) -> dict:
        return adacan_settings(cls.name)

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"bert": [self.bert],
                              "co-attention": [self.region_projection, self.visual_attention, self.textual_attention],
                              "fusion": [self.fusion], "filtration+emission+crf": [self.filtration, self.crf]})

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert
        self.config = config
        d = config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.region_projection = nn.Sequential(nn.Linear(config.image_dim, d), nn.Tanh())  # monologg's dim_match
        self.visual_attention = KeyAttention(d, d)     # word-guided visual attention
        self.textual_attention = KeyAttention(d, d)    # image-guided textual attention
        self.fusion = GatedFusion(d)
        self.filtration = FiltrationGate(d, len(config.crf_tags))
        self.crf = CRF(len(config.crf_tags))
        if config.init == "bert":  # every layer after BERT but the CRF, as UMT's init_bert_weights (not the default)
            for part in (self.region_projection, self.visual_attention, self.textual_attention, self.fusion,
                         self.filtration):
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
            raise ValueError("AdaCAN needs regions and image_ok from the feature store")
        regions, image_ok, region_mask = present_regions(regions, image_ok, text.dtype)  # (B, R, C), (B, R)

        over_words = cfg.crf_over == "words"
        words = gather_words(text, word_starts, word_mask) if over_words else text   # H (B, n, d)
        crf_mask = word_mask.bool() if over_words else mask
        visual, weights = self.visual_attention(self.region_projection(regions), region_mask)  # ṽ (B, d), α (B, R)
        textual, _ = self.textual_attention(words, crf_mask)                                   # h̃ (B, d)
        fused = self.fusion(visual, textual)                                                   # m (B, d)
        emissions = at_least_fp32(self.filtration(words, fused))                               # (B, n, K)
        loss, decoded, emissions = crf_outputs(self.crf, emissions, crf_mask, tags, word_starts, word_mask, mask, cfg,
                                               world / total, decode)
        # α is the same for every word (see above): (B, 1 head, L, R) as the readers take it
        attention = weights[:, None, None, :].expand(-1, 1, input_ids.shape[1], -1)
        return MAFOutput(loss, loss, None, None, emissions, None, attention, decoded)


class AdacanCNNBiLSTMCRF(CNNBiLSTMCRF, library_name="maf", model_card_template=ADACAN_CARD, tags=ADACAN_TAGS):
    """AdaCAN-CNN-BiLSTM-CRF (`config.architecture` "adacan-cnn-bilstm-crf"): the co-attention,
    fusion and filtration gate above on a CNN-BiLSTM text encoder (maf_core/models/bilstm.py: words
    and a character CNN, a word BiLSTM) with AdaCAN's sizes; its filtration gate gives the tag scores."""

    name = "adacan-cnn-bilstm-crf"
    title = "AdaCAN-CNN-BiLSTM-CRF"
    inputs = ("words", "regions")
    attention_name = "word-guided visual"
    card, card_tags = ADACAN_CARD, ADACAN_TAGS
    recipe = ("docs/model.md, AdaCAN-CNN-BiLSTM-CRF: Zhang et al. 2018 as monologg/NER-Multimodal-pytorch reads it, "
              "with the sizes and training of its code (jinlanfu/NERmultimodal) where this code base has them")
    # word embeddings 200 and a BiLSTM of 200 (100 per direction), char embeddings 30 (the official
    # code and MP); the char CNN is Ma & Hovy's (30 filters of width 3), not AdaCAN's three widths
    settings = dict(word_dim=200, char_encoder="cnn", char_dim=30, char_hidden=30, char_window=3, lstm_hidden=100,
                    word_dropout=0.25)
    # Adam-like at 1e-3 (MP: Adam 1e-3; the official code: Keras's default RMSprop, 1e-3), batches of
    # 10 and 25 epochs (the official code), no clipping in either (1e9 never binds)
    training = dict(optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup=0.0, clip=1e9, batch_size=10, epochs=25,
                    batching="random")

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        """The settings above with the image: the store's 49 regions of 2048 channels."""
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
        self.emission = None  # the filtration gate gives the tag scores
        self.region_projection = nn.Sequential(nn.Linear(config.image_dim, d), nn.Tanh())  # dim_match
        self.visual_attention = KeyAttention(d, d)
        self.textual_attention = KeyAttention(d, d)
        self.fusion = GatedFusion(d)
        self.filtration = FiltrationGate(d, len(config.crf_tags))

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
            raise ValueError("AdaCAN-CNN-BiLSTM-CRF reads word_chars, word_mask, regions and image_ok")
        world, total = (shard.world, shard.total) if shard is not None else (1, word_chars.shape[0])
        mask = word_mask.bool()
        words = self.dropout(self.encode(word_chars, mask))                       # H (B, W, 2h)
        regions, image_ok, region_mask = present_regions(regions, image_ok, words.dtype)  # (B, R, C), (B, R)
        visual, weights = self.visual_attention(self.region_projection(regions), region_mask)  # ṽ (B, 2h), α (B, R)
        textual, _ = self.textual_attention(words, mask)                                       # h̃ (B, 2h)
        emissions = at_least_fp32(self.filtration(words, self.fusion(visual, textual)))         # (B, W, K)
        loss = None
        if tags is not None:
            loss = -self.crf(emissions, tags.long(), mask=mask, reduction="sum") * (world / total)
        decoded = self.crf.decode(emissions, mask=mask) if decode else None
        positions = input_ids.shape[1] if input_ids is not None else mask.shape[1]
        attention = weights[:, None, None, :].expand(-1, 1, positions, -1)
        return MAFOutput(loss, loss, None, None, emissions, None, attention, decoded)

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({"word embeddings": [self.embedding], "characters": [self.chars], "bilstm": [self.lstm],
                              "co-attention": [self.region_projection, self.visual_attention, self.textual_attention],
                              "fusion": [self.fusion], "filtration+emission+crf": [self.filtration, self.crf]})
