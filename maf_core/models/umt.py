"""UMT-BERT-CRF and MT-BERT-CRF (Yu et al., ACL 2020), the baselines of MAF's Table 2, on the same
text, store and CRF as MAF.

    BERT → dropout → T
    main branch:  T → self-attention → W (words)
                  regions → vismap2text → text-to-image cross-attention(W over regions) → A
                  regions → vismap2text_v2 → image-to-text cross-attention(regions over W) → Q
                  text-to-text cross-attention(W over Q) → P
                  g = σ(W_g [P; A]),  H = [P; g ⊙ A],  emissions E = W_c H
    UMT only, entity span detection (ESD):
                  T → self-attention → S → span emissions E_s (O, B, I) → their own CRF
                  E ← 0.5 E + 0.5 E_s · trans_matrix   (span tags spread over entity tags)
    loss = CRF(E) + 0.5 · CRF_span(E_s);   MT-BERT-CRF has no ESD: loss = CRF(E)

As the released code builds it (jefferyYu/UMT, my_bert/mner_modeling.py 1239-1342: the names
in parentheses below are its modules'); every setting and its source: docs/model.md. The span
labels are derived from the entity tags of each batch (B- and S- → B, I- and E- → I): nothing
new is stored. A tweet whose image status is not ok has its regions zeroed and masked, so its
outputs depend on its text alone; no other photo stands in for it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from maf_core.config import PIECE_TAGS, MAFConfig
from maf_core.crf import CRF
from maf_core.distributed import BatchShard
from maf_core.interaction import BertLayer
from maf_core.models.base import (
    TASK_TAGS,
    MAFOutput,
    TrainedAsUMT,
    at_least_fp32,
    bert_init,
    count_by_part,
    gather_words,
    piece_targets,
    present_regions,
    word_paths,
)

SPAN_TAGS = ("O", "B", "I")
SPAN_MIX = 0.5          # the main emissions' share against the converted span emissions (alpha, 1327-1328)
SPAN_LOSS_WEIGHT = 0.5  # of the span CRF's loss (beta, 1334-1338)
_SPAN_OF_PREFIX = {"B": "B", "S": "B", "I": "I", "E": "I"}

UMT_CARD = """
---
{{ card_data }}
---

# UMT-BERT-CRF / MT-BERT-CRF for multimodal named entity recognition

The baselines of Yu et al. (ACL 2020), as their released code builds them, trained with
`maf train --model umt` (or `mt`) on the same tokenized text and image store as MAF.

    from maf_core.umt import UMT
    model = UMT.from_pretrained("DIRECTORY or Hub name")

Scores and settings: below, where the run wrote them.
"""


@dataclass
class UMTOutput(MAFOutput):
    """MAFOutput (loss_ca, loss_cm and match_prob are None: UMT has no CA, CM or p), and the span
    detection's parts (None for MT)."""

    loss_span: torch.Tensor | None = None       # the span CRF's negative log-likelihood, mean over tweets
    span_emissions: torch.Tensor | None = None  # (B, W, span CRF states) per word


def span_tag(tag: str) -> str:
    """The span tag of an entity tag: O; B for B- and S-; I for I- and E-. Piece states keep theirs."""
    if tag == "O" or tag in PIECE_TAGS:
        return tag
    prefix, dash, _ = tag.partition("-")
    if not dash or prefix not in _SPAN_OF_PREFIX:
        raise ValueError(f"tag {tag!r}: expected O or a B-, I-, E- or S- tag")
    return _SPAN_OF_PREFIX[prefix]


def span_states(config: MAFConfig) -> list[str]:
    """The span CRF's states: O, B, I, and over pieces X, [CLS], [SEP], [PAD] (as the CRF's)."""
    return list(SPAN_TAGS) + (list(PIECE_TAGS) if config.crf_over == "pieces" else [])


def span_of_states(config: MAFConfig) -> torch.Tensor:
    """For each CRF state, the index of its span state, shape: (CRF states,)."""
    spans = span_states(config)
    return torch.tensor([spans.index(span_tag(tag)) for tag in config.crf_tags])


def conversion_matrix(config: MAFConfig) -> torch.Tensor:
    """trans_matrix, shape: (span states, CRF states): a span state's score spread evenly over the
    entity states of that span: B over every B- (and S-) tag, I over every I- (and E-), O to O,
    each piece state to itself. With BIO tags and four types this is the released code's matrix
    (run_mtmner_crf.py 620-633, 0.25 from B to each B- tag), in this project's tag order."""
    owner = span_of_states(config)
    matrix = torch.zeros(len(span_states(config)), len(config.crf_tags))
    matrix[owner, torch.arange(len(owner))] = 1.0
    return matrix / matrix.sum(1, keepdim=True)


UMT_TAGS = ["umt", *TASK_TAGS]
# a state dict saved before UMT's layers were maf_core.interaction.BertLayer: its old names -> the new
_RENAMED = ((re.compile(r"\.attention\.(query|key|value)\."), r".\1."),
            (re.compile(r"\.attention_output\."), ".output."))


def umt_settings(name: str) -> dict:
    """The settings of UMT-BERT-CRF (`umt`) or MT-BERT-CRF (`mt`, without the span detection) as
    the released code (jefferyYu/UMT at f478ee6) builds them: BIO tags with X, [CLS], [SEP] on a
    CRF over every piece (run_mtmner_crf.py 239-243, 359-395), BERT's GELU layers with LayerNorm
    eps 1e-12 (mner_modeling.py 475-501) initialised by init_bert_weights (681-691, applied at
    1263). CA, CM and CF are MAF's and off. UMT reads no sentence vector, so the encoder is built without BERT's pooler
    (pooling "first"; the released code's pooler is never read). A text tokenized BIOES is
    accepted too (the span of S- is B, of E- is I)."""
    if name not in (UMT.name, MT.name):
        raise ValueError(f"unknown baseline {name!r}; expected umt or mt")
    return dict(architecture=name, use_alignment=False, use_matching=False, text_only=False, scheme="bio",
                crf_over="pieces", interaction_activation="gelu", layer_norm_eps=1e-12, init="bert",
                dropout_on="text", pooling="first")


class UMT(TrainedAsUMT, library_name="maf", model_card_template=UMT_CARD, tags=UMT_TAGS):
    """UMT-BERT-CRF (`config.architecture` "umt"); MT below is UMT without its span detection;
    called as MAF is. Its recipe (TrainedAsUMT: config sizes, checks, BertAdam in random batches of
    32, fp32) is the released code's, which the other models of UMT's code base are trained with."""

    name = "umt"
    title = "UMT-BERT-CRF"
    inputs = ("pieces", "regions")
    attention_name = "text-to-image"
    card, card_tags = UMT_CARD, UMT_TAGS
    options = ("heads", "bert", "bert_size")
    recipe = "docs/model.md, UMT-BERT-CRF and MT-BERT-CRF: the released code (jefferyYu/UMT)"
    # takes_text_scheme (TrainedAsUMT's): BIO as the released code, or BIOES (the span of S- is B, of E- is I)
    span_detection = True     # ESD: the span CRF and its share of the emissions

    @classmethod
    def settings(cls) -> dict:
        """As the released code builds it (umt_settings)."""
        return umt_settings(cls.name)

    @classmethod
    def config_from_options(cls, bert: str | None = None, bert_size: str = "base", heads: int | None = None,
                            **_) -> MAFConfig:
        return cls.default_config(bert=bert, bert_size=bert_size, heads=heads)

    @classmethod
    def upgrade_state(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs saved when UMT's layers were its own Attention + TransformerLayer load unchanged:
        `X.attention.query.*` is now `X.query.*`, `X.attention_output.*` is `X.output.*`."""
        renamed = {}
        for key, value in state.items():
            for pattern, replacement in _RENAMED:
                key = pattern.sub(replacement, key)
            renamed[key] = value
        return renamed

    def parameter_counts(self) -> dict[str, int]:
        return count_by_part({
            "bert": [self.bert],
            "text branch": [self.text_attention],
            "cross-modal": [self.region_projection, self.region_projection_v2, self.text_to_image,
                            self.image_to_text, self.text_to_text, self.gate],
            "span detection": [self.span_attention, self.span_emission, self.span_crf],
            "emission+crf": [self.emission, self.crf],
        })

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert
        self.config = config
        d, image = config.hidden_size, config.image_dim
        self.dropout = nn.Dropout(config.dropout)
        self.text_attention = BertLayer(config)                    # self_attention_v2
        self.region_projection = nn.Linear(image, d)                      # vismap2text
        self.region_projection_v2 = nn.Linear(image, d)                   # vismap2text_v2
        self.text_to_image = BertLayer(config)                     # txt2img_attention
        self.image_to_text = BertLayer(config)                     # img2txt_attention
        self.text_to_text = BertLayer(config)                      # txt2txt_attention
        self.gate = nn.Linear(2 * d, d)                                   # the visual gate
        self.emission = nn.Linear(2 * d, len(config.crf_tags))            # classifier
        self.crf = CRF(len(config.crf_tags))
        spans = self.span_detection
        self.span_attention = BertLayer(config) if spans else None               # self_attention
        self.span_emission = nn.Linear(d, len(span_states(config))) if spans else None  # aux_classifier
        self.span_crf = CRF(len(span_states(config))) if spans else None                # aux_crf
        # derived from the tags, not saved with the weights
        self.register_buffer("conversion", conversion_matrix(config), persistent=False)
        self.register_buffer("span_of_state", span_of_states(config), persistent=False)
        if config.init == "bert":  # init_bert_weights (mner_modeling.py 1263); the CRFs keep theirs
            for name, part in self.named_children():
                if name not in ("bert", "crf", "span_crf") and part is not None:
                    part.apply(bert_init)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor,
                word_mask: torch.Tensor, regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None, decode: bool = False,
                generator: torch.Generator | None = None, negatives=None,
                shard: BatchShard | None = None, word_chars: torch.Tensor | None = None) -> UMTOutput:
        """MAF.forward's arguments: input_ids, attention_mask (B, L); word_starts, word_mask (B, W);
        regions (B, R, C) and image_ok (B,) from the store; tags (B, W) when training. `pooled`,
        `generator` and `negatives` are MAF's and unused; with `shard` the losses are this
        process's share of the global batch's mean, times the processes (maf_core.distributed)."""
        cfg = self.config
        world, total = (shard.world, shard.total) if shard is not None else (1, input_ids.shape[0])
        mask = attention_mask.bool()
        text = self.encode_pieces(input_ids, attention_mask)                      # (B, L, d)
        if regions is None or image_ok is None:
            raise ValueError("UMT needs regions and image_ok from the feature store")
        regions, image_ok, region_mask = present_regions(regions, image_ok, text.dtype)  # (B, R, C), (B, R)

        words, _ = self.text_attention(text, text, mask)                         # W (B, L, d)
        visual, attention = self.text_to_image(words, self.region_projection(regions), region_mask)  # A (B, L, d)
        aware_regions, _ = self.image_to_text(self.region_projection_v2(regions), words, mask)    # Q (B, R, d)
        multimodal, _ = self.text_to_text(words, aware_regions, region_mask)                       # P (B, L, d)
        gate = torch.sigmoid(self.gate(torch.cat([multimodal, visual], dim=-1)))
        hidden = torch.cat([multimodal, gate * visual], dim=-1)                                   # H (B, L, 2d)

        over_words = cfg.crf_over == "words"
        crf_mask = word_mask.bool() if over_words else mask
        emissions = at_least_fp32(self.emission(gather_words(hidden, word_starts, word_mask) if over_words
                                                 else hidden))
        span_emissions = None
        if self.span_emission is not None:
            spans, _ = self.span_attention(text, text, mask)                     # S (B, L, d)
            span_emissions = at_least_fp32(self.span_emission(gather_words(spans, word_starts, word_mask)
                                                               if over_words else spans))
            # shape: (B, n, span states) x (span states, K) -> (B, n, K); a sum of products, so
            # that it stays in fp32 under autocast
            converted = (span_emissions.unsqueeze(-1) * self.conversion).sum(-2)
            emissions = SPAN_MIX * emissions + (1 - SPAN_MIX) * converted

        loss = loss_ner = loss_span = None
        if tags is not None:
            targets = (tags if over_words else piece_targets(tags, word_starts, word_mask, mask, len(cfg.tags))).long()
            scale = world / total  # this process's sum over all tweets, times the processes
            loss_ner = -self.crf(emissions, targets, mask=crf_mask, reduction="sum") * scale
            loss = loss_ner
            if self.span_crf is not None:
                spans_of = self.span_of_state[targets]                           # the span labels
                loss_span = -self.span_crf(span_emissions, spans_of, mask=crf_mask, reduction="sum") * scale
                loss = loss_ner + SPAN_LOSS_WEIGHT * loss_span
        decoded = word_paths(self.crf, emissions, crf_mask, word_starts, word_mask, cfg) if decode else None
        if not over_words:  # per word, at its first piece, as MAF's
            emissions = gather_words(emissions, word_starts, word_mask)
            if span_emissions is not None:
                span_emissions = gather_words(span_emissions, word_starts, word_mask)
        return UMTOutput(loss, loss_ner, None, None, emissions, None, attention, decoded, loss_span, span_emissions)


def span_labels(tags: list[str]) -> list[str]:
    """The span labels of one tweet's entity tags (what the span CRF learns over words)."""
    return [span_tag(tag) for tag in tags]


class MT(UMT):
    """MT-BERT-CRF: UMT without its entity span detection (Yu et al. 2020's ablation)."""

    name = "mt"
    title = "MT-BERT-CRF"
    span_detection = False
