"""The store fingerprint: what a store's features depend on, and the one module that knows its rules.

- `fingerprint(config, weights_identity)` builds it (extraction, the online baseline);
- `store_differences(found, wanted)` compares two, for runs and for extraction reusing a store
  (`job_differences`: the shards of an unfinished one): every field must agree but those that
  move features in their last digits only (`ROUNDING_ONLY`, listed once), with a warning when
  the library versions differ;
- `extract_config_of(store_fingerprint)` is the inverse: the `ExtractConfig` that makes new images'
  features as that store's were made (`maf predict --images`).

`ExtractConfig` itself lives in `pipeline/extract_config.py`, which imports nothing of this
module, the driver or the worker side: each of them imports it without a cycle.
"""
from __future__ import annotations

import json
import logging

import PIL
import torch
import torchvision

from pipeline.backbone import BACKBONES, GRID, random_seed
from pipeline.errors import DataError
from pipeline.extract_config import ExtractConfig
from pipeline.images import Transform
from pipeline.store import FORMAT_VERSION

logger = logging.getLogger(__name__)

# what the fingerprint records of each (full: nothing, as stores always were)
DECODE_PRINTS = {"fast": "fast-jpeg-draft", "device": "device-jpeg"}
DECODE_OF_PRINT = {recorded: decode for decode, recorded in DECODE_PRINTS.items()}
# fingerprint fields that change features in the last digits only: the library versions, and
# channels_last (1.2e-7 on ResNet-152's pooled features in fp32, benchmarks/cpu_forward.py)
ROUNDING_ONLY = ("versions", "channels_last")


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


def store_differences(found: dict, wanted: dict, what: str = "", planned: bool = False,
                      against: str = "the run's store") -> str:
    """How two store fingerprints differ in what makes the features ('' when they agree).

    The one rule for using features made earlier: a run's store (resume, `maf evaluate`,
    `maf predict`), and a complete store that extraction reuses. Every field must agree but
    those that move features by rounding only (ROUNDING_ONLY): the versions (a torch,
    torchvision or Pillow release), logged as a warning naming `what` and `against`, and the
    memory layout of the forward. `planned`: `wanted` is planned before extraction, so the
    BatchNorm statistics' hash, measured while extracting, is left out of both.
    """
    _warn_versions(found, wanted, what, against)
    return _differences(_deciding(found, planned), _deciding(wanted, planned))


def job_differences(found: dict, wanted: dict, what: str) -> str:
    """How the job record of an unfinished extraction (its fingerprint, ids and shard size)
    differs from this run's, under the same rule: shards made with other versions or the other
    memory layout finish the store."""
    _warn_versions(found.get("fingerprint", {}), wanted["fingerprint"], what, "this extraction")
    return _differences({**found, "fingerprint": _deciding(found.get("fingerprint", {}), planned=True)},
                        {**wanted, "fingerprint": _deciding(wanted["fingerprint"], planned=True)})


def _deciding(store_fingerprint: dict, planned: bool) -> dict:
    """The fields of a fingerprint that decide the features (all but ROUNDING_ONLY); `planned`:
    also without what is measured only while extracting (the BatchNorm statistics' hash)."""
    out = {k: v for k, v in store_fingerprint.items() if k not in ROUNDING_ONLY}
    if planned and "bn_stats" in out:
        out["bn_stats"] = {k: v for k, v in out["bn_stats"].items() if k != "sha256"}
    return out


def _warn_versions(found: dict, wanted: dict, what: str, against: str) -> None:
    if found.get("versions") != wanted.get("versions"):
        logger.warning("%sthe store was made with %s, %s with %s; features may differ in the last digits",
                       f"{what}: " if what else "", found.get("versions"), against, wanted.get("versions"))


def _differences(found: dict, wanted: dict) -> str:
    """The fields in which two records (fingerprints, job records) differ, 'there' vs 'now'."""
    keys = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
    return "; ".join(_difference(found, wanted, k) for k in keys)


def _difference(found: dict, wanted: dict, key: str) -> str:
    a, b = found.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
        inner = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"{key}." + ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in inner)
    if key == "ids_sha256":
        return "another list of image ids"
    return f"{key}: {a!r} there, {b!r} now"


def extract_config_of(store_fingerprint: dict, weights: str | None = None, bn_buffers: dict | None = None,
                      source: str = "the store") -> ExtractConfig:
    """The settings that extract new images as the store of `store_fingerprint` was made (the inverse of
    `fingerprint`: every field it records is read back), in this process. `weights`: the
    weights file, for a store made from one (the fingerprint keeps its hash, not its path);
    `bn_buffers`: the BatchNorm statistics of a --bn-stats dataset store, kept instead of
    re-estimated on the new images. `source` names the store in errors."""
    identity, transform = store_fingerprint["weights"], store_fingerprint["transform"]
    bn = store_fingerprint["bn_stats"]
    if identity["kind"] == "random":
        weights_arg, seed = "none", random_seed(identity["identity"])
        if seed is None:
            raise DataError(f"{source} was made with random backbone weights of an older init "
                            f"({identity['identity']}); `--weights none` no longer makes them: re-extract the "
                            "store (and retrain on it), or pass the store itself (--features)")
    else:
        if identity["kind"] != "imagenet" and weights is None:
            raise DataError(f"{source} was made with backbone weights from {identity.get('file')}; pass that "
                            "file (--weights) so that new images get the same backbone")
        weights_arg = "imagenet" if identity["kind"] == "imagenet" else weights
        seed = int(transform.get("seed", bn.get("seed", 0)))  # one seed made maf-crop's offsets and AdaBN's sample
    if bn["mode"] == "dataset" and bn_buffers is None:
        raise DataError(f"{source} was made with BatchNorm statistics re-estimated on its images "
                        "(--bn-stats dataset); new images need those statistics")
    defaults = ExtractConfig()
    precision = store_fingerprint.get("precision", defaults.precision)
    return ExtractConfig(
        backbone=store_fingerprint["backbone"], weights=weights_arg, transform=transform["name"],
        decode=DECODE_OF_PRINT.get(store_fingerprint.get("decode"), "full"), bn_stats=bn["mode"],
        bn_samples=bn.get("samples", defaults.bn_samples), seed=seed, precision=precision,
        channels_last=store_fingerprint.get("channels_last", defaults.channels_last),
        max_pixels=store_fingerprint.get("max_pixels", defaults.max_pixels),
        device="cpu" if precision == "fp32" else "cuda",  # tf32 and bf16 run on CUDA only
        workers=0, bn_buffers=bn_buffers if bn["mode"] == "dataset" else None)
