"""What every model shares: SavedModel (saving, loading, the Hub, and the questions every reader of a
run asks its model), the output of a forward pass, and the helpers of a CRF over words or pieces.

A model family subclasses SavedModel with a `name` (what `maf train --model NAME` and
config.json's "architecture" say); defining the class registers it in MODELS, the one lookup
from a name to its class (maf_core.models.registry reads it). Nothing outside this package asks
which model a run is: it asks the class.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from torch import nn

from maf_core.checkpoint import CONFIG, WEIGHTS, load_state_into, load_weights, save_weights
from maf_core.config import BERT_SIZES, MAFConfig
from maf_core.crf import CRF
from maf_core.encoder import build_encoder, fit_to_encoder, resolve_pooling
from pipeline.errors import DataError
from pipeline.files import atomic_output

FEATURE_KEYS = ("regions", "pooled", "image_ok")
# the batch keys a forward pass may read (besides tags): what every caller passes it
MODEL_KEYS = ("input_ids", "attention_mask", "word_starts", "word_mask", *FEATURE_KEYS, "word_chars")
# what a model reads, by kind of input: a class's `inputs` names some of these
INPUT_KEYS = {"pieces": ("input_ids", "attention_mask", "word_starts", "word_mask"),
              "words": ("word_chars", "word_mask"),  # each word's characters (code points), and which words are real
              "regions": ("regions", "image_ok"), "pooled": ("pooled", "image_ok")}
TASK_TAGS = ["multimodal-ner", "named-entity-recognition", "twitter"]  # after each family's own tag

# name -> model class; filled as each family's class is defined (SavedModel.__init_subclass__)
MODELS: dict[str, type["SavedModel"]] = {}


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


class SavedModel(nn.Module, PyTorchModelHubMixin):
    """What every model of a run shares: save_pretrained / from_pretrained / push_to_hub (from
    huggingface_hub's PyTorchModelHubMixin) over DIR/config.json + DIR/model.safetensors, and
    what differs between models, as class attributes and class methods that a family sets:

    name            --model NAME and config.json's "architecture"; registers the class in MODELS
    title           the name in tables, logs and the model card ("MAF", "UMT-BERT-CRF")
    inputs          the kinds of input it reads (keys of INPUT_KEYS): pieces, regions, pooled
    attention_name  what its `attention` output is, for the report and the page (None: none)
    card            the model card template; `card_tags` its Hub tags
    options         the options of `maf train` that set its own parts (others' are refused)
    recipe          where its defaults come from (docs/model.md's section)
    takes_text_scheme   whether it trains with the text's tag scheme (BIO or BIOES) rather than
                    requiring its config's

    A class is built as cls(config, bert) and checks that the config is its own (`check_config`).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("pieces",)
    attention_name: ClassVar[str | None] = None
    card: ClassVar[str] = ""
    card_tags: ClassVar[list[str]] = []
    options: ClassVar[tuple[str, ...]] = ()
    recipe: ClassVar[str] = ""
    takes_text_scheme: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in MODELS:
                raise TypeError(f"{cls.__name__}: model name {cls.name!r} is {MODELS[cls.name].__name__}'s")
            MODELS[cls.name] = cls

    # -- what differs between models (a family overrides these) ------------------------------

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        """The model as its source builds it (every value and its source: docs/model.md), at
        BERT-base's sizes until the encoder is built; `overrides` win."""
        raise NotImplementedError

    @classmethod
    def config_from_options(cls, **options) -> MAFConfig:
        """The model `maf train` builds from its options (None: not given); the options are this
        class's `options` and the encoder's (bert, bert_size)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, config: MAFConfig) -> list[str]:
        """What in a config this model cannot build (MAFConfig.validate checks the rest)."""
        return []

    @classmethod
    def fit_to_text(cls, config: MAFConfig, train_words: list[list[str]]) -> MAFConfig:
        """The config fitted to the training text's words (the word-level models' vocabularies);
        others read word pieces, fitted elsewhere (maf_core.inputs)."""
        return config

    def init_new(self) -> None:
        """What a new model (not one loaded from its weights) reads besides its config: nothing,
        or the word-level models' --word-vectors."""

    @classmethod
    def train_defaults(cls, preset: str) -> dict:
        """TrainConfig values of its recipe (those it leaves out: TrainConfig's defaults)."""
        return {}

    @classmethod
    def autocast_by_default(cls, config: MAFConfig) -> bool:
        """Whether it trains and predicts under bf16 autocast on CUDA when --amp is not given."""
        return True

    @classmethod
    def display_name(cls, config: MAFConfig) -> str:
        return cls.title

    @classmethod
    def describe(cls, config: MAFConfig) -> str:
        """What the model card's "model" row says of this configuration."""
        return cls.display_name(config)

    @classmethod
    def computes_p(cls, config: MAFConfig) -> bool:
        """Whether a model of this configuration computes p, the match probability of CM (a
        reader of a run asks this without building the model)."""
        return False

    @classmethod
    def reads_images(cls, config: MAFConfig) -> bool:
        """Whether a model of this configuration reads the store's regions (MAF but its text-only
        baseline, UMT, MT, GVATT, AdaCAN; not BERT-softmax or the BiLSTM taggers)."""
        return "regions" in cls.inputs and not config.text_only

    @property
    def has_p(self) -> bool:
        """Whether it computes p, the match probability of CM."""
        return self.computes_p(self.config)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters by part, and their total."""
        raise NotImplementedError

    def encode_pieces(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The BERT models' text: the encoder's last layer over the word pieces, after the model's
        dropout (a model with `bert` and `dropout`).
        shape: input_ids, attention_mask (B, L) -> (B, L, d)"""
        if self.config.pad_token_id:  # batches are padded with 0, which is <s> for RoBERTa-like vocabularies
            input_ids = input_ids.masked_fill(attention_mask == 0, self.config.pad_token_id)
        return self.dropout(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)

    # -- building, saving and loading ---------------------------------------------------------

    def _check_own(self, config: MAFConfig) -> None:
        """ValueError unless `config` names this class's architecture and passes its `check_config`."""
        if config.architecture != self.name:
            raise ValueError(f"{type(self).__name__} builds architecture {self.name}, not {config.architecture!r} "
                             "(maf_core.models.build_model picks the class for a config)")
        problems = self.check_config(config)
        if problems:
            raise ValueError("invalid MAFConfig: " + "; ".join(problems))

    def _encoder_for(self, config: MAFConfig, bert: nn.Module | None) -> tuple[nn.Module, MAFConfig]:
        """The text encoder (`bert`, or one built from the config) and the config fitted to it, once
        the config is checked to be one this class builds."""
        self._check_own(config)
        if bert is None:
            return build_encoder(config)
        return bert, fit_to_encoder(config, bert, resolve_pooling(config.pooling, bert.config.model_type))

    @classmethod
    def upgrade_state(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict saved by an earlier version, under this version's parameter names."""
        return state

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
        downloaded once into the Hugging Face cache). Needs no trainer. The class its config names
        is built when it is this class or a subclass (UMT.from_pretrained loads an MT too)."""
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
        model_class = MODELS.get(config.architecture)
        if model_class is None or not issubclass(model_class, cls):
            raise DataError(f"{model_id}: holds a {config.architecture} model, not a {cls.__name__}; load it with "
                            "maf_core.models.load_model")
        model = model_class(config, bert)
        load_state_into(model, load_weights(directory, map_location), directory)
        return model.to(map_location).eval()


class TrainedAsUMT(SavedModel):
    """UMT-BERT-CRF's recipe, as its released code (jefferyYu/UMT) builds and trains it, and the
    multimodal BERT models of Table 2 that UMT's authors ran in that code base (GVATT-BERT-CRF,
    AdaCAN-BERT-CRF), built and trained as UMT-BERT-CRF since the UMT paper's settings for them
    were not found. A family sets `settings()` (its config values) and its own layers."""

    options = ("bert", "bert_size")
    takes_text_scheme = True  # BIO as UMT's runs, or BIOES

    @classmethod
    def settings(cls) -> dict:
        """The family's MAFConfig values (architecture, tag scheme, CRF over pieces, init ...)."""
        raise NotImplementedError

    @classmethod
    def default_config(cls, **overrides) -> MAFConfig:
        """As UMT's released code builds its models (`settings`), at BERT-base's sizes until the
        encoder is built."""
        size = BERT_SIZES.get(overrides.get("bert_size", "base"), BERT_SIZES["base"])
        values = dict(cls.settings(), bert_size="base", hidden_size=size["hidden_size"], max_length=128,
                      image_dim=2048, num_regions=49)
        values.update(overrides)
        return MAFConfig(**values)

    @classmethod
    def config_from_options(cls, bert: str | None = None, bert_size: str = "base", **_) -> MAFConfig:
        return cls.default_config(bert=bert, bert_size=bert_size)

    @classmethod
    def check_config(cls, config: MAFConfig) -> list[str]:
        if config.use_alignment or config.use_matching or config.text_only:
            return [f"architecture {config.architecture} with CA, CM or text_only (MAF's; expected "
                    "use_alignment and use_matching false, text_only false)"]
        return []

    @classmethod
    def train_defaults(cls, preset: str) -> dict:
        """As UMT-BERT-CRF's released code trains it: BertAdam, random batches of 32
        (run_mtmner_crf.sh 11, run_mtmner_crf.py 715, 741)."""
        return {"optimizer": "bertadam", "batching": "random", "batch_size": 32}

    @classmethod
    def autocast_by_default(cls, config: MAFConfig) -> bool:
        """fp32, as UMT's code trains and predicts unless its --fp16 (run_mtmner_crf.py 530, 675)."""
        return False


def present_regions(regions: torch.Tensor, image_ok: torch.Tensor,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The store's regions in `dtype`, zeroed where a tweet's image is not ok (no other photo stands
    in for it), image_ok as bool and the regions' mask.
    shape: regions (B, R, C), image_ok (B,) -> regions (B, R, C), image_ok (B,), mask (B, R)"""
    image_ok = image_ok.bool()
    regions = regions.to(dtype) * image_ok.to(dtype)[:, None, None]  # never a stray image
    return regions, image_ok, image_ok[:, None].expand(-1, regions.shape[1])


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


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Scores for the CRF in fp32 under autocast (the CRF sums in fp32), and left in fp64 if they are."""
    return x if x.dtype == torch.float64 else x.float()


def count_by_part(parts: dict[str, list[nn.Module | None]]) -> dict[str, int]:
    """Trainable parameters of each named group of modules (None: a part switched off), and their total."""
    counts = {name: sum(p.numel() for m in modules if m is not None for p in m.parameters() if p.requires_grad)
              for name, modules in parts.items()}
    counts["total"] = sum(counts.values())
    return counts


def crf_outputs(crf: CRF, emissions: torch.Tensor, crf_mask: torch.Tensor, tags: torch.Tensor | None,
                word_starts: torch.Tensor, word_mask: torch.Tensor, mask: torch.Tensor, config: MAFConfig,
                scale: float, decode: bool) -> tuple[torch.Tensor | None, list[list[int]] | None, torch.Tensor]:
    """A CRF head over words or pieces (`config.crf_over`): its negative log-likelihood summed over the
    tweets times `scale` (1 / tweets: the mean; in distributed training world / global tweets), or
    None without tags; the Viterbi word tags when `decode`; and the emissions per word (B, W, K),
    each word's at its first piece."""
    over_words = config.crf_over == "words"
    loss = None
    if tags is not None:
        targets = tags if over_words else piece_targets(tags, word_starts, word_mask, mask, len(config.tags))
        loss = -crf(emissions, targets.long(), mask=crf_mask, reduction="sum") * scale
    paths = word_paths(crf, emissions, crf_mask, word_starts, word_mask, config) if decode else None
    return loss, paths, emissions if over_words else gather_words(emissions, word_starts, word_mask)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension where `mask` is True, 0 elsewhere; a row with nothing to
    attend to (a tweet without an image) gets all zeros, not a uniform spread or NaN."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask.to(scores.dtype)
