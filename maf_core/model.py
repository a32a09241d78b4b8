"""MAF assembled (paper section 3): BERT → CI → CM → CF → emissions → CRF, with CA and CM losses.

Inputs are word pieces plus precomputed image features (from store.h5): the frozen ResNet is
not part of the model. The CRF runs over words (the first piece of each word), or over every
piece with `crf_over = "pieces"` (the released code).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from torch import nn
from torch.nn import functional as F

from maf_core.alignment import CrossModalAlignment
from maf_core.checkpoint import CONFIG, WEIGHTS, load_state_into, load_weights, save_weights
from maf_core.config import MAFConfig
from maf_core.crf import CRF
from maf_core.distributed import BatchShard, gather_rows
from maf_core.encoder import build_encoder, fit_to_encoder, resolve_pooling
from maf_core.fusion import CrossModalFusion
from maf_core.interaction import CrossModalInteraction
from maf_core.matching import CrossModalMatching, choose_negatives
from pipeline.errors import DataError
from pipeline.files import atomic_output

FEATURE_KEYS = ("regions", "pooled", "image_ok")
# the batch keys MAF.forward reads (besides tags): what every caller passes it
MODEL_KEYS = ("input_ids", "attention_mask", "word_starts", "word_mask", *FEATURE_KEYS)


@dataclass
class MAFOutput:
    """What one forward pass returns; losses are None when no tags were given."""

    loss: torch.Tensor | None           # the weighted total (eq. 18)
    loss_ner: torch.Tensor | None       # CRF negative log-likelihood, mean over tweets
    loss_ca: torch.Tensor | None        # CA contrastive loss (None when CA is off)
    loss_cm: torch.Tensor | None        # CM binary cross-entropy (None when CM is off or not training)
    emissions: torch.Tensor             # (B, W, CRF states) per word (at its first piece)
    match_prob: torch.Tensor | None     # p per tweet (B,), on its true image; 0 without an image; None: no CM (UMT)
    attention: torch.Tensor | None      # CI weights (B, heads, L, regions), for pictures
    tags: list[list[int]] | None = None  # Viterbi word tags, when decode=True


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


CARD_TAGS = ["maf", "multimodal-ner", "named-entity-recognition", "twitter"]


class SavedModel(nn.Module, PyTorchModelHubMixin):
    """What every model of a run shares: save_pretrained / from_pretrained / push_to_hub (from
    huggingface_hub's PyTorchModelHubMixin) over DIR/config.json + DIR/model.safetensors.
    A subclass names the `architectures` its config may hold and is built as cls(config, bert)."""

    architectures: tuple[str, ...] = ()

    def _encoder_for(self, config: MAFConfig, bert: nn.Module | None) -> tuple[nn.Module, MAFConfig]:
        """The text encoder (`bert`, or one built from the config) and the config fitted to it, once
        the config's architecture is checked to be one this class builds."""
        if config.architecture not in self.architectures:
            raise ValueError(f"{type(self).__name__} builds architecture {' or '.join(self.architectures)}, not "
                             f"{config.architecture!r} (maf_core.models.build_model picks the class for a config)")
        if bert is None:
            return build_encoder(config)
        return bert, fit_to_encoder(config, bert, resolve_pooling(config.pooling, bert.config.model_type))

    def _save_pretrained(self, save_directory: Path) -> None:
        """DIR/config.json + DIR/model.safetensors (`save_pretrained`, from PyTorchModelHubMixin, calls
        this, then adds a model card README.md unless one is there; `push_to_hub` uploads them)."""
        save_weights(self.state_dict(), save_directory)
        with atomic_output(save_directory / CONFIG) as handle:
            json.dump(self.config.to_dict(), handle, indent=2, sort_keys=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu", **hub) -> "SavedModel":
        """A saved model in eval mode: a directory from `save_pretrained`, a run's best/, the run
        directory itself (its best/ is used), or a Hub name (`hub`: revision, token, cache_dir ...;
        downloaded once into the Hugging Face cache). Needs no trainer."""
        directory = Path(directory)
        if directory.exists():
            if not (directory / CONFIG).is_file() or (directory / "best" / CONFIG).is_file():
                directory = directory / "best"
            if not (directory / CONFIG).is_file():
                where = directory.parent if directory.name == "best" else directory
                raise DataError(f"{where}: no saved {cls.__name__} (config.json with model.safetensors, or a run "
                                "directory with best/)")
        try:  # bert=None: config.json's "bert" is the encoder's name, not the module __init__ takes
            return super().from_pretrained(str(directory), map_location=str(device), bert=None, **hub)
        except DataError:
            raise
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise DataError(f"{directory / CONFIG}: not a {cls.__name__} config ({err})") from None

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", config: MAFConfig, bert=None,
                         **download) -> "SavedModel":
        """The weights beside config.json: in the directory, or fetched from the Hub repository."""
        directory = Path(model_id)
        if not directory.is_dir():
            download = {k: download[k] for k in ("revision", "cache_dir", "force_download", "local_files_only",
                                                 "token") if k in download}
            directory = Path(hf_hub_download(repo_id=model_id, filename=WEIGHTS, **download)).parent
        config = config if isinstance(config, MAFConfig) else MAFConfig.from_dict(config)
        if config.architecture not in cls.architectures:
            raise DataError(f"{model_id}: holds a {config.architecture} model, not a {cls.__name__}; load it with "
                            "maf_core.models.load_model")
        model = cls(config, bert)
        load_state_into(model, load_weights(directory, map_location), directory)
        return model.to(map_location).eval()


class MAF(SavedModel, library_name="maf", model_card_template=MODEL_CARD, tags=CARD_TAGS):
    """The whole model; `config.text_only` gives the BERT-CRF baseline on the same code path."""

    architectures = ("maf",)

    def __init__(self, config: MAFConfig, bert: nn.Module | None = None) -> None:
        super().__init__()
        bert, config = self._encoder_for(config, bert)
        self.bert = bert  # the text encoder (any Hugging Face encoder; named after the paper's BERT)
        hidden = config.hidden_size
        self.config = config
        self.dropout = nn.Dropout(config.dropout)
        self.alignment = CrossModalAlignment(config) if config.visual and config.use_alignment else None
        self.interaction = CrossModalInteraction(config) if config.visual else None
        self.matching = CrossModalMatching(config) if config.visual and config.use_matching else None
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
                shard: BatchShard | None = None) -> MAFOutput:
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


def gather_words(x: torch.Tensor, word_starts: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    # shape: x (B, L, n) -> (B, W, n), the first piece of each word
    index = word_starts.clamp(min=0).masked_fill(~word_mask.bool(), 0)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def piece_targets(tags: torch.Tensor, word_starts: torch.Tensor, word_mask: torch.Tensor, mask: torch.Tensor,
                  num_tags: int) -> torch.Tensor:
    """Word tags spread over the pieces (crf_over="pieces"): [CLS] first, a word's tag on its
    first piece, X on the pieces after it, [SEP] last, [PAD] beyond; the piece states are
    numbered after the `num_tags` tags, in PIECE_TAGS' order."""
    x, cls, sep, pad = (num_tags + i for i in range(4))
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)[None]
    out = torch.where(mask, x, pad).to(tags.dtype)
    out = torch.where(positions == (lengths - 1)[:, None], sep, out)
    out[:, 0] = cls
    starts = word_starts.clamp(min=0).masked_fill(~word_mask.bool(), 0)
    return out.scatter(1, starts, torch.where(word_mask.bool(), tags, out.gather(1, starts)))


def word_paths(crf: CRF, emissions: torch.Tensor, crf_mask: torch.Tensor, word_starts: torch.Tensor,
               word_mask: torch.Tensor, config: MAFConfig) -> list[list[int]]:
    """Viterbi tags per word; over pieces, the tag of each word's first piece (a piece state,
    X, [CLS], [SEP] or [PAD], counts as O)."""
    paths = crf.decode(emissions, mask=crf_mask)
    if config.crf_over == "words":
        return paths
    outside = config.tags.index("O") if "O" in config.tags else 0
    real = len(config.tags)
    starts, counts = word_starts.tolist(), word_mask.sum(1).tolist()
    return [
        [path[s] if path[s] < real else outside for s in row[:n]] for path, row, n in zip(paths, starts, counts)
    ]


def bert_init(module: nn.Module) -> None:
    """BERT's initialisation (the released code's init_bert_weights): N(0, 0.02), zero biases."""
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


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
