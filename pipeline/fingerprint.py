"""The store fingerprint: what the features depend on, and how two fingerprints compare."""
from __future__ import annotations

import json
import logging

import PIL
import torch
import torchvision

from pipeline.backbone import BACKBONES, GRID
from pipeline.extract_config import ExtractConfig
from pipeline.images import Transform
from pipeline.store import FORMAT_VERSION

logger = logging.getLogger(__name__)

# what the fingerprint records of each (full: nothing, as stores always were)
DECODE_PRINTS = {"fast": "fast-jpeg-draft", "device": "device-jpeg"}


def fingerprint(config: ExtractConfig, weights_identity: dict) -> dict:
    """What the features depend on (docs/design.md): training refuses stores whose fingerprints differ."""
    bn = {"mode": config.bn_stats}
    if config.bn_stats == "dataset":
        bn.update(samples=config.bn_samples, seed=config.seed, transform=config.transform)
    return _json({
        "format_version": FORMAT_VERSION,
        "backbone": config.backbone,
        "channels": BACKBONES[config.backbone],
        "regions": GRID * GRID,
        "weights": weights_identity,
        "transform": Transform(config.transform, config.seed).describe(),
        "bn_stats": bn,
        "precision": config.precision,
        "channels_last": config.channels_last,
        "max_pixels": config.max_pixels,
        **({"decode": DECODE_PRINTS[config.decode]} if config.decode in DECODE_PRINTS else {}),
        "dtype": {"regions": "float16", "pooled": "float32"},
        "versions": {"torch": torch.__version__.split("+")[0], "torchvision": torchvision.__version__.split("+")[0],
                     "pillow": PIL.__version__},
    })


def _json(value: dict) -> dict:
    """As it reads back from JSON (tuples become lists), so fingerprints compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))



# fingerprint fields that change features in the last digits only: the library versions, and
# channels_last (1.2e-7 on ResNet-152's pooled features in fp32, benchmarks/cpu_forward.py)
ROUNDING_ONLY = ("versions", "channels_last")


def differences(found: dict, wanted: dict) -> str:
    """The fields in which two records (fingerprints, job records) differ, 'there' vs 'now'."""
    keys = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
    return "; ".join(_difference(found, wanted, k) for k in keys)


def store_differences(found: dict, wanted: dict, what: str = "") -> str:
    """How two store fingerprints differ in what makes the features ('' when they agree).

    The one rule for using a store with a run (resume, `maf evaluate`, `maf predict`): every
    field must agree except those that move features by rounding only (ROUNDING_ONLY): the
    versions (a torch or torchvision patch release), logged as a warning naming `what`, and
    the memory layout of the forward.
    """
    if found.get("versions") != wanted.get("versions"):
        logger.warning("%sthe store was made with %s, the run's store with %s; features may differ in "
                       "the last digits", f"{what}: " if what else "", found.get("versions"), wanted.get("versions"))
    return differences({k: v for k, v in found.items() if k not in ROUNDING_ONLY},
                       {k: v for k, v in wanted.items() if k not in ROUNDING_ONLY})


def _difference(found: dict, wanted: dict, key: str) -> str:
    a, b = found.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
        inner = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"{key}." + ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in inner)
    if key == "ids_sha256":
        return "another list of image ids"
    return f"{key}: {a!r} there, {b!r} now"



def _without_rounding(job_record: dict) -> dict:
    """A job record whose fingerprint leaves out the memory layout, which moves features by
    rounding only: shards made with either layout finish one store (other versions still refuse)."""
    fingerprint = {k: v for k, v in job_record.get("fingerprint", {}).items() if k != "channels_last"}
    return {**job_record, "fingerprint": fingerprint}



def _spec(print_: dict) -> dict:
    """A fingerprint without the measured BatchNorm hash and the fields that only move features
    by rounding: what a rerun can compare up front."""
    out = {k: v for k, v in print_.items() if k not in ("channels_last",)}
    if "bn_stats" in out:
        out["bn_stats"] = {k: v for k, v in out["bn_stats"].items() if k != "sha256"}
    return out

