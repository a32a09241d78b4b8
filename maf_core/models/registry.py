"""The one lookup from a model's name (`maf train --model NAME`, config.json's "architecture") to its
class, and what the rest of the code asks of a run's model through it. The trainer builds, and
every reader of a run (evaluate, predict, report, --resume) loads, its model through here, so each
gets the model the run was trained as. Configs saved before the name was recorded are MAF's (the
dataclass default of MAFConfig.architecture)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from torch import nn

from maf_core.checkpoint import CONFIG
from maf_core.config import MAFConfig, TrainConfig
from maf_core.models.adacan import AdacanBertCRF, AdacanCNNBiLSTMCRF
from maf_core.models.base import MODELS, SavedModel
from maf_core.models.bert import BertSoftmax
from maf_core.models.bilstm import BiLSTMCRF, CNNBiLSTMCRF, HBiLSTMCRF
from maf_core.models.gvatt import GvattBertCRF, GvattHBiLSTMCRF
from maf_core.models.maf import MAF
from maf_core.models.umt import MT, UMT
from pipeline.errors import DataError

# every model, in the order --model lists them (defining a class registers it in MODELS)
FAMILIES: tuple[type[SavedModel], ...] = (MAF, UMT, MT, BertSoftmax, BiLSTMCRF, CNNBiLSTMCRF, HBiLSTMCRF,
                                         GvattBertCRF, AdacanBertCRF, GvattHBiLSTMCRF, AdacanCNNBiLSTMCRF)
ARCHITECTURES = tuple(cls.name for cls in FAMILIES)  # the first is --model's default
if set(ARCHITECTURES) != set(MODELS):  # a model class defined and left out here, or the reverse
    raise ImportError(f"maf_core.models.registry: FAMILIES names {ARCHITECTURES}, the classes defined are "
                      f"{tuple(MODELS)}")
# the name of a config that names none: runs from before the name was recorded
DEFAULT_ARCHITECTURE = next(f.default for f in fields(MAFConfig) if f.name == "architecture")


def model_class(name: str) -> type[SavedModel]:
    """The class of the model called `name` (ValueError naming the known ones)."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ValueError(f"architecture {name!r} is not a model this version knows ({known})") from None


def build_model(config: MAFConfig, bert: nn.Module | None = None) -> SavedModel:
    """A new model of `config.architecture` (its encoder built, or `bert`; a word-level model's
    embeddings from its --word-vectors)."""
    model = model_class(config.architecture)(config, bert)
    model.init_new()
    return model


def fit_to_text(config: MAFConfig, train_words: list[list[str]]) -> MAFConfig:
    """The config fitted to the train split's words (the word-level models' vocabularies)."""
    return model_class(config.architecture).fit_to_text(config, train_words)


def default_config(name: str, **overrides) -> MAFConfig:
    """The model called `name` as its source builds it (MAF: the `paper` preset; UMT and MT: their
    released code), at BERT-base's sizes until the encoder is built; `overrides` win."""
    return model_class(name).default_config(**overrides)


def config_from_options(name: str, given: Iterable[str] = (), **options) -> MAFConfig:
    """`maf train`'s model: the options of --model `name` (None: not given). `given`: the options
    set on the command line or in --config; one that sets another model's own parts is a
    DataError naming it and whose it is."""
    cls = model_class(name)
    foreign = [option for option in given if option not in cls.options
               and any(option in other.options for other in FAMILIES)]
    order = [option for family in FAMILIES for option in family.options]
    foreign.sort(key=order.index)
    if foreign:
        flags = ", ".join(f"--{FLAGS.get(option, option).replace('_', '-')}" for option in foreign)
        owners = [family.title for family in FAMILIES if any(option in family.options for option in foreign)]
        raise DataError(f"--model {name}: {flags} {'is' if len(foreign) == 1 else 'are'} not for {cls.title} "
                        f"(options of {', '.join(owners)}); leave {'it' if len(foreign) == 1 else 'them'} out")
    return cls.config_from_options(**{k: v for k, v in options.items() if k in cls.options})


# options whose flag is not their name (--bert-config sets bert_size)
FLAGS = {"bert_size": "bert_config"}


def train_config(name: str, preset: str, **values) -> TrainConfig:
    """The training settings of the model's recipe (and MAF's --preset); `values` (None: unset) win."""
    defaults = model_class(name).train_defaults(preset)
    return TrainConfig(**{**defaults, **{k: v for k, v in values.items() if v is not None}})


def uses_amp(amp: bool | None, model: MAFConfig, device_type: str) -> bool:
    """bf16 autocast or fp32: `amp` (--amp / --no-amp) where given; otherwise on with CUDA, except
    for a model whose recipe trains and predicts in fp32 (MAF's released-code preset, UMT and MT,
    as their released code does: fp32 unless its --fp16, run_mtmner_crf.py 530, 675)."""
    if amp is not None:
        return amp
    return device_type == "cuda" and model_class(model.architecture).autocast_by_default(model)


def saved_architecture(directory: str | Path, **hub) -> str:
    """The architecture a saved model's config.json names (MAF's when it names none: runs from
    before UMT); MAF's too when there is no readable config, so that MAF's loader says what is wrong."""
    path = Path(directory)
    if path.exists():
        candidates = [path / "best" / CONFIG, path / CONFIG]
        found = next((c for c in candidates if c.is_file()), None)
    else:  # a Hub name: its config.json, downloaded once into the Hugging Face cache
        download = {k: hub[k] for k in ("revision", "cache_dir", "force_download", "local_files_only", "token")
                    if k in hub}
        try:
            found = Path(hf_hub_download(repo_id=str(directory), filename=CONFIG, **download))
        except Exception:  # noqa: BLE001 - MAF.from_pretrained reports it in its own words
            found = None
    try:
        values = json.loads(found.read_text(encoding="utf-8")) if found is not None else {}
    except (OSError, ValueError):
        return DEFAULT_ARCHITECTURE
    architecture = values.get("architecture", DEFAULT_ARCHITECTURE) if isinstance(values, dict) \
        else DEFAULT_ARCHITECTURE
    if architecture not in MODELS:
        raise DataError(f"{found}: architecture {architecture!r} is not a model this version knows "
                        f"({', '.join(ARCHITECTURES)})")
    return architecture


def load_model(directory: str | Path, device: torch.device | str = "cpu", **hub) -> SavedModel:
    """A saved model of whichever architecture, in eval mode: what `MAF.from_pretrained` takes (a
    directory from save_pretrained, a run's best/, a run directory, or a Hub name)."""
    return model_class(saved_architecture(directory, **hub)).from_pretrained(directory, device, **hub)


def reads_images(config: MAFConfig) -> bool:
    """Whether the config's model reads the store's regions (what images_seen warns about)."""
    return model_class(config.architecture).reads_images(config)


def computes_p(config: MAFConfig) -> bool:
    """Whether the config's model computes p (CM's match probability); null p everywhere otherwise."""
    return model_class(config.architecture).computes_p(config)


def model_name(config: MAFConfig) -> str:
    """'MAF', 'text-only BERT-CRF', 'UMT-BERT-CRF', 'MT-BERT-CRF' ..."""
    return model_class(config.architecture).display_name(config)


def describe(config: MAFConfig) -> str:
    """The model card's "model" row: the name, and for MAF its preset and ablation."""
    return model_class(config.architecture).describe(config)


def model_card(config: MAFConfig) -> tuple[str, list[str]]:
    """The model card template and tags of the config's model."""
    cls = model_class(config.architecture)
    return cls.card, list(cls.card_tags)


def count_parameters(model: SavedModel) -> dict[str, int]:
    """Trainable parameters by part, and their total (each model's own parts)."""
    return model.parameter_counts()
