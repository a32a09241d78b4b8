"""MAF assembled (paper section 3): BERT → CI → CM → CF → emissions → CRF, with CA and CM losses.

Inputs are word pieces plus precomputed image features (from store.h5): the frozen ResNet is
not part of the model. The CRF runs over words (the first piece of each word), or over every
piece with `crf_over = "pieces"` (the released code).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maf_core.alignment import CrossModalAlignment
from maf_core.config import MAFConfig, preset_of
from maf_core.crf import CRF
from maf_core.distributed import BatchShard, gather_rows
from maf_core.fusion import CrossModalFusion
from maf_core.interaction import CrossModalInteraction
from maf_core.matching import CrossModalMatching, choose_negatives
from maf_core.models.base import TASK_TAGS, MAFOutput, SavedModel, bert_init, gather_words, piece_targets, word_paths

MODEL_CARD = """
---
{{ card_data }}
---

# MAF for multimodal named entity recognition

MAF (Xu et al., WSDM 2022): a text encoder + precomputed ResNet features, cross-modal
alignment, interaction, matching and fusion, and a CRF; trained with `maf train`.

    from maf_core.model import MAF
    model = MAF.from_pretrained("DIRECTORY or Hub name")

Its image features must come from a store with the fingerprint its run recorded
(`maf predict --images` extracts them so); scores and settings: below, where the run wrote them.
"""


CARD_TAGS = ["maf", *TASK_TAGS]


class MAF(SavedModel, library_name="maf", model_card_template=MODEL_CARD, tags=CARD_TAGS):
    """The whole model; `config.text_only` gives the BERT-CRF baseline on the same code path."""

    name = "maf"
    title = "MAF"
    inputs = ("pieces", "regions", "pooled")
    attention_name = "CI"
    card, card_tags = MODEL_CARD, CARD_TAGS
    # train's options that set MAF's own parts (refused with another --model), and the encoder's
    options = ("preset", "swap", "matching_head", "ner_pairs", "pooling", "no_alignment", "no_matching", "text_only",
               "heads", "bert", "bert_size")
    recipe = "docs/model.md, Presets: the paper (section 4.3), the released code (xubodhu/MAF), recommended"

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        """The `paper` preset (MAFConfig.from_preset)."""
        return MAFConfig.from_preset("paper", **overrides)

    @classmethod
    def config_from_options(cls, preset: str = "paper", no_alignment: bool = False, no_matching: bool = False,
                            text_only: bool = False, **settings) -> MAFConfig:
        """--preset with the flags given (MAFConfig.from_options), then the ablation."""
        return MAFConfig.from_options(preset, no_alignment, no_matching, text_only, **settings)

    @classmethod
    def train_defaults(cls, preset: str) -> dict:
        """The released code's BertAdam and random batches under its preset; otherwise TrainConfig's (the paper's)."""
        return {"optimizer": "bertadam", "batching": "random"} if preset == "released-code" else {}

    @classmethod
    def autocast_by_default(cls, config: MAFConfig) -> bool:
        """bf16 on CUDA, except under the released-code preset, which trains in fp32 as its code does."""
        return preset_of(config) != "released-code"

    @classmethod
    def display_name(cls, config: MAFConfig) -> str:
        """'MAF', 'MAF without CA' (an ablation: not the paper's MAF, so no published row beside it in
        `maf table`), 'text-only BERT-CRF'."""
        return "text-only BERT-CRF" if config.text_only else cls.title + cls._ablation(config)

    @classmethod
    def describe(cls, config: MAFConfig) -> str:
        """'MAF, preset `paper`', '... without CA', 'text-only BERT-CRF'."""
        if config.text_only:
            return cls.display_name(config)
        preset = preset_of(config)
        return (f"{cls.title}, " + (f"preset `{preset}`" if preset else "settings of no preset (config.json)")
                + cls._ablation(config))

    @staticmethod
    def _ablation(config: MAFConfig) -> str:
        """' without CA', ' without CA and CM' or ''."""
        if not config.visual or (config.use_alignment and config.use_matching):
            return ""
        return " without " + " and ".join(name for name, on in (("CA", config.use_alignment),
                                                                ("CM", config.use_matching)) if not on)

    @classmethod
    def computes_p(cls, config: MAFConfig) -> bool:
        return config.visual and config.use_matching  # CM is built for exactly these (below)

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self)

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert  # the text encoder (any Hugging Face encoder; named after the paper's BERT)
        hidden = config.hidden_size
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.alignment = CrossModalAlignment(config) if config.visual and config.use_alignment else None
        self.interaction = CrossModalInteraction(config) if config.visual else None
        self.matching = CrossModalMatching(config) if self.computes_p(config) else None
        self.fusion = CrossModalFusion(config) if config.visual else None
        self.emission = nn.Linear(2 * hidden if config.visual else hidden, len(config.crf_tags))
        self.crf = CRF(len(config.crf_tags))
        if config.init == "bert":
            for part in (self.alignment, self.interaction, self.matching, self.fusion, self.emission):
                if part is not None:
                    part.apply(bert_init)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor,
                word_mask: torch.Tensor, regions: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                image_ok: torch.Tensor | None = None, tags: torch.Tensor | None = None,
                decode: bool = False, generator: torch.Generator | None = None,
                negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
                shard: BatchShard | None = None, word_chars: torch.Tensor | None = None) -> MAFOutput:
        """input_ids, attention_mask (B, L); word_starts (B, W) first-piece positions (any value
        where word_mask is False); word_mask (B, W), a prefix of each row; regions (B, R, C);
        pooled (B, C); image_ok (B,) bool; tags (B, W) when training.

        CM negatives in training: `negatives` = (permutation, is_negative) over the (global)
        batch, from `choose_negatives`; if not given they are drawn here with `generator`.
        `shard`: this process's rows of a global batch in distributed training (the losses are
        then this process's share, times the number of processes; see maf_core.distributed)."""
        cfg = self.config
        batch = input_ids.shape[0]
        world, total = (shard.world, shard.total) if shard is not None else (1, batch)
        input_ids, attention_mask = self._padded(input_ids, attention_mask)
        if cfg.pad_token_id:  # batches are padded with 0, which is <s> for RoBERTa-like vocabularies
            input_ids = input_ids.masked_fill(attention_mask == 0, cfg.pad_token_id)
        mask = attention_mask.bool()
        text, text_pooled = self.encode_text(input_ids, attention_mask)  # T (B, L, d), T_s (B, d)
        loss_ca = loss_cm = attention = None
        match_prob = text.new_zeros(batch)
        hidden = text
        if cfg.visual:
            image_ok = image_ok.bool()
            keep = image_ok.to(text.dtype)
            regions = regions.to(text.dtype) * keep[:, None, None]   # never a stray image for a bad one
            pooled = pooled.to(text.dtype) * keep[:, None]
            image, attention = self.interaction(text, regions)      # CI: C, shape: (B, L, d)
            if self.alignment is not None:                           # CA
                loss_ca = self.alignment(text_pooled, pooled, image_ok, shard)
            retained = image
            if self.matching is not None:                            # CM: M = p * C (eq. 12)
                true_p, _ = self.matching(text, image, mask)
                match_prob = true_p.detach() * keep
                p = true_p
                if self.training and tags is not None:
                    p, loss_cm, image = self.match_in_training(text, image, regions, mask, image_ok, true_p,
                                                               negatives, generator, shard)
                retained = p[:, None, None] * image
            hidden = self.fusion(text, retained * keep[:, None, None])  # CF: H = [T; R], shape: (B, L, 2d)

        emissions, crf_mask = self._emissions(hidden, word_starts, word_mask, mask)
        loss = loss_ner = None
        if tags is not None:
            # the mean over the (global) batch: this process's sum / all tweets, times the processes
            crf_tags = self._crf_targets(tags, word_starts, word_mask, mask) if cfg.crf_over == "pieces" else tags
            loss_ner = -self.crf(emissions, crf_tags.long(), mask=crf_mask, reduction="sum") * (world / total)
            loss = self._total(loss_ner, loss_ca, loss_cm)
        decoded = self._decode(emissions, crf_mask, word_starts, word_mask) if decode else None
        if cfg.crf_over == "pieces":  # per word, at its first piece, as in the words case
            emissions = gather_words(emissions, word_starts, word_mask)
        return MAFOutput(loss, loss_ner, loss_ca, loss_cm, emissions, match_prob, attention, decoded)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T (B, L, d), dropped out here when `dropout_on = "text"`, and T_s (B, d): BERT's tanh
        pooler on [CLS], the first token's state, or the mean over the pieces (`pooling`)."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        text = out.last_hidden_state
        if self.config.pooling == "pooler":
            sentence = out.pooler_output
        elif self.config.pooling == "first":
            sentence = text[:, 0]
        else:
            weights = attention_mask.to(text.dtype).unsqueeze(-1)
            sentence = (text * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.config.dropout_on == "text":
            text = self.dropout(text)
        return text, sentence

    def match_in_training(self, text, image, regions, mask, image_ok, true_p, negatives, generator, shard):
        """CM in training (eq. 11): swap chosen pairs of the (global) batch, score every row.

        Returns (p per row, the CM loss, the C each row's tags then learn from): with
        `ner_pairs = "swapped"` a swapped tweet learns its tags from p * (its negative's C),
        so p learns to shut an unrelated image out; with "true", from its own p and C.
        """
        cfg = self.config
        batch = text.shape[0]
        total = shard.total if shard is not None else batch
        all_ok = gather_rows(image_ok, shard)
        if negatives is None:  # drawn on the host (callers that can, pass them: no sync)
            negatives = choose_negatives(all_ok.cpu(), self.pairs_for(total), cfg.negatives, generator)
        permutation, negative = (t.to(text.device) for t in negatives)
        swapped, swapped_mask = self.swapped_image(text, image, regions, mask, permutation, shard)
        p, loss = self.matching(text, swapped, mask, negative[shard.rows if shard is not None else slice(0, batch)],
                                use=image_ok, count=all_ok.sum(), scale=shard.world if shard is not None else 1,
                                image_mask=swapped_mask)
        if cfg.ner_pairs == "swapped":
            return p, loss, swapped
        return true_p, loss, image

    def swapped_image(self, text, image, regions, mask, permutation, shard=None):
        """What each row's T is paired with when rows swap by `permutation` (over the global
        batch): C recomputed from T and the other row's regions (`swap = "image"`: the text
        side stays the row's own), or the other row's C (`"c"`). Returns (C', the mask of the
        tweet C' was made with), shape: (B, L, d), (B, L)."""
        rows = shard.rows if shard is not None else slice(0, text.shape[0])
        if self.config.swap == "image":
            swapped, _ = self.interaction(text, gather_rows(regions, shard)[permutation[rows]])
            return swapped, mask
        return gather_rows(image, shard)[permutation[rows]], gather_rows(mask, shard)[permutation[rows]]

    def _padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With `matching_positions = "all"` every batch runs BERT over max_length positions, as
        the released code pads to 128 (CM then sees BERT's states at the padding). Only CM
        reads those positions, so a model without CM is not padded."""
        missing = self.config.max_length - input_ids.shape[1]
        if self.config.matching_positions != "all" or self.matching is None or missing <= 0:
            return input_ids, attention_mask
        return F.pad(input_ids, (0, missing)), F.pad(attention_mask, (0, missing))

    def _emissions(self, hidden, word_starts, word_mask, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag scores over the CRF's sequence, in fp32 (the CRF sums in fp32 under autocast too):
        (B, W, K) over words, or (B, L, K) over pieces; and that sequence's mask."""
        if self.config.dropout_on == "emissions":
            hidden = self.dropout(hidden)
        if self.config.crf_over == "pieces":
            return self.emission(hidden).float(), mask
        return self.emission(gather_words(hidden, word_starts, word_mask)).float(), word_mask.bool()

    def _crf_targets(self, tags, word_starts, word_mask, mask) -> torch.Tensor:
        return piece_targets(tags, word_starts, word_mask, mask, len(self.config.tags))

    def _decode(self, emissions, crf_mask, word_starts, word_mask) -> list[list[int]]:
        """Viterbi tags per word (see `word_paths`)."""
        return word_paths(self.crf, emissions, crf_mask, word_starts, word_mask, self.config)

    def pairs_for(self, batch: int) -> int:
        """k for a batch of this size: the configured share of the reference batch (paper: 15 of 64)."""
        cfg = self.config
        if cfg.matching_batch is None:
            return cfg.matching_pairs
        return max(1, round(cfg.matching_pairs * batch / cfg.matching_batch))

    def _total(self, ner: torch.Tensor, ca: torch.Tensor | None, cm: torch.Tensor | None) -> torch.Tensor:
        """Eq. 18, or the released code's 0.62 NER + 0.38 (CA + CM); a switched-off part drops out."""
        cfg = self.config
        zero = ner.new_zeros(())
        ca = zero if ca is None else ca
        cm = zero if cm is None else cm
        if cfg.loss_weighting == "released-code":
            return 0.62 * ner + 0.38 * (ca + cm)
        return cfg.alpha * ca + cfg.beta * cm + (1 - cfg.alpha - cfg.beta) * ner


def count_parameters(model: MAF) -> dict[str, int]:
    """Trainable parameters by part, and their total.

    With BERT-base cased (vocabulary 28,996) and the paper's sizes, the parts are: BERT with
    its pooler 108.3M; CI 8.7M (W_j 1.6M, attention 2.4M, FFN 4.7M); CA 3.3M (the text MLP
    1.2M, the image MLP 2.2M); CM 0.2M (one weight per flattened value, 128 x 1,536); CF
    1.2M; emissions and CRF under 0.02M: about 121.7M trainable, measured by this function
    in `tests/test_model.py::test_parameter_count_of_the_paper_size`. The paper's 196.28M
    (Table 3; its text calls MAF the smaller model, so the 196.28M/208.29M pair reads as
    MAF/UMT) also counts the frozen ResNet-152, 58.1M without its classifier layer
    (60.2M with it): 121.7 + 58.1 = 179.8M, or 181.9M with the classifier. The remaining
    ~14M are not explained by the paper; the released code's extra layers (its CI copies
    UMT's multi-layer cross-attention) are the likely source. We do not count frozen
    features here: they live in store.h5.
    """
    parts = {
        "bert": model.bert,
        "interaction": model.interaction,
        "alignment": model.alignment,
        "matching": model.matching,
        "fusion": model.fusion,
        "emission+crf": nn.ModuleList([model.emission, model.crf]),
    }
    counts = {name: sum(p.numel() for p in part.parameters() if p.requires_grad) if part is not None else 0
              for name, part in parts.items()}
    counts["total"] = sum(counts.values())
    return counts
