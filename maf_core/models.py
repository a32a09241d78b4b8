"""The model a config describes: MAF (maf_core/model.py) or the baselines UMT-BERT-CRF and
MT-BERT-CRF (maf_core/umt.py), chosen by `MAFConfig.architecture`. The trainer builds, and every
reader of a run (evaluate, predict, report, --resume) loads, its model through here, so each
gets the model the run was trained as. Configs saved before UMT existed are MAF's."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from torch import nn

from maf_core.checkpoint import CONFIG
from maf_core.config import ARCHITECTURES, MAFConfig
from maf_core.model import CARD_TAGS, MAF, MODEL_CARD, SavedModel
from maf_core.model import count_parameters as maf_parameters
from maf_core.umt import UMT, UMT_CARD
from pipeline.errors import DataError

MODELS: dict[str, type[SavedModel]] = {"maf": MAF, "umt": UMT, "mt": UMT}
NAMES = {"maf": "MAF", "umt": "UMT-BERT-CRF", "mt": "MT-BERT-CRF"}


def build_model(config: MAFConfig, bert: nn.Module | None = None) -> SavedModel:
    """A new model of `config.architecture` (its encoder built, or `bert`)."""
    return MODELS[config.architecture](config, bert)


def saved_architecture(directory: str | Path, **hub) -> str:
    """The architecture a saved model's config.json names ("maf" when it names none: runs from
    before UMT); "maf" too when there is no readable config, so that MAF's loader says what is wrong."""
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
        return "maf"
    architecture = values.get("architecture", "maf") if isinstance(values, dict) else "maf"
    if architecture not in MODELS:
        raise DataError(f"{found}: architecture {architecture!r} is not a model this version knows "
                        f"({', '.join(ARCHITECTURES)})")
    return architecture


def load_model(directory: str | Path, device: torch.device | str = "cpu", **hub) -> SavedModel:
    """A saved model of whichever architecture, in eval mode: what `MAF.from_pretrained` takes (a
    directory from save_pretrained, a run's best/, a run directory, or a Hub name)."""
    return MODELS[saved_architecture(directory, **hub)].from_pretrained(directory, device, **hub)


def model_name(config: MAFConfig) -> str:
    """'MAF', 'text-only BERT-CRF', 'UMT-BERT-CRF' or 'MT-BERT-CRF'."""
    return "text-only BERT-CRF" if config.text_only else NAMES[config.architecture]


def model_card(config: MAFConfig) -> tuple[str, list[str]]:
    """The model card template and tags of the config's model."""
    if config.architecture == "maf":
        return MODEL_CARD, CARD_TAGS
    return UMT_CARD, ["umt", *CARD_TAGS[1:]]


def count_parameters(model: SavedModel) -> dict[str, int]:
    """Trainable parameters by part, and their total (MAF's parts: maf_core.model.count_parameters)."""
    if isinstance(model, MAF):
        return maf_parameters(model)
    parts = {
        "bert": [model.bert],
        "text branch": [model.text_attention],
        "cross-modal": [model.region_projection, model.region_projection_v2, model.text_to_image,
                        model.image_to_text, model.text_to_text, model.gate],
        "span detection": [model.span_attention, model.span_emission, model.span_crf],
        "emission+crf": [model.emission, model.crf],
    }
    counts = {name: sum(p.numel() for m in modules if m is not None for p in m.parameters() if p.requires_grad)
              for name, modules in parts.items()}
    counts["total"] = sum(counts.values())
    return counts
