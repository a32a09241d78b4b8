"""The settings of `maf-pipe extract-images`, and the choices each takes.

A module of its own so that the driver (`extract`), the worker side (`extract_worker`) and
the fingerprint rules (`fingerprint`, which also builds the config a store was made with)
all import it, and none of them imports another to get it. The CLI reads its choices and
defaults from here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.backbone import BACKBONES
from pipeline.device_decode import DeviceDecoderError, check_device_decoder
from pipeline.errors import DataError
from pipeline.images import MAX_PIXELS, TRANSFORMS

PRECISIONS = ("fp32", "tf32", "bf16")
DECODES = ("full", "fast", "device")
BN_STATS = ("imagenet", "dataset")
MISSING = ("record", "fail")
# the settings that take one of a list of values, and that list
CHOICES = {"backbone": tuple(BACKBONES), "transform": TRANSFORMS, "decode": DECODES, "bn_stats": BN_STATS,
           "precision": PRECISIONS, "missing": MISSING}


@dataclass
class ExtractConfig:
    """Everything that decides the features (→ fingerprint) and how the work is spread (→ not)."""

    backbone: str = "resnet152"
    weights: str = "imagenet"        # imagenet | path to a .pth state dict | none (random, seeded)
    transform: str = "resize"        # resize | maf-crop (pipeline.images.Transform)
    # full: every image decoded at full size; fast: JPEGs at the smallest DCT scale that still
    # covers 224 pixels (PIL's draft mode; slightly other pixels, so recorded in the fingerprint);
    # device: JPEGs decoded and resized by torchvision on --device (nvJPEG on CUDA), the rest as full
    decode: str = "full"
    bn_stats: str = "imagenet"       # imagenet (those of the weights) | dataset (AdaBN)
    bn_samples: int = 256            # images sampled to re-estimate BatchNorm statistics
    seed: int = 0                    # random weights, maf-crop offsets, AdaBN sample
    precision: str = "fp32"          # fp32 | tf32 | bf16 (the last two on CUDA only)
    # channels_last memory format: measured faster on this CPU (1.15x, benchmarks/cpu_forward.py)
    # and the fast path on GPUs; it moves features by rounding only (1.2e-7 here), so stores
    # made either way are used together (pipeline/fingerprint.py::ROUNDING_ONLY); AdaBN statistics
    # re-estimated under the other layout differ in their last digits, and so in their hash
    channels_last: bool = True
    max_pixels: int = MAX_PIXELS
    # how the work is spread: never changes the features
    device: str = "cpu"
    batch_size: int = 16
    shard_size: int = 256
    workers: int | None = None       # local Dask worker processes; 0 = in this process
    threads: int | None = None       # torch threads per worker
    decode_threads: int | None = None
    scheduler: str | None = None
    missing: str = "record"          # record | fail
    # --bn-stats dataset with the BatchNorm statistics of an earlier store (a run's, for new
    # images), kept instead of re-estimated; None: estimated on these images
    bn_buffers: dict[str, np.ndarray] | None = None

    def validate(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise DataError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected one of "
                                f"{', '.join(choices)}")
        if self.decode != "full" and self.transform != "resize":
            raise DataError(f"--decode {self.decode} needs --transform resize "
                            f"({self.transform} crops at full resolution, with PIL)")
        if self.precision != "fp32" and not self.device.startswith("cuda"):
            raise DataError(f"--precision {self.precision} needs --device cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise DataError("--device cuda: no CUDA device is visible here")
        if self.decode == "device":
            try:
                check_device_decoder(self.device)
            except DeviceDecoderError as err:
                raise DataError(f"--decode device: torchvision cannot decode JPEGs on {self.device} here "
                                f"({err}); use --decode fast or full") from None
        for name in ("batch_size", "shard_size", "bn_samples"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1")

