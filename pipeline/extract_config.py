"""The settings of `maf-pipe extract-images`, and the choices each takes."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.backbone import BACKBONES
from pipeline.device_decode import DeviceDecoderError, check_device_decoder
from pipeline.errors import DataError
from pipeline.images import MAX_PIXELS, Transform

PRECISIONS = ("fp32", "tf32", "bf16")
DECODES = ("full", "fast", "device")



@dataclass
class ExtractConfig:
    """Everything that decides the features (→ fingerprint) and how the work is spread (→ not)."""

    backbone: str = "resnet152"
    weights: str = "imagenet"        # imagenet | path to a .pth state dict | none (random, seeded)
    transform: str = "resize"        # resize | maf-crop
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
    # made either way are used together (pipeline/store.py::ROUNDING_ONLY); AdaBN statistics
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
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise DataError(f"--backbone {self.backbone}: expected one of {', '.join(BACKBONES)}")
        if self.bn_stats not in ("imagenet", "dataset"):
            raise DataError(f"--bn-stats {self.bn_stats}: expected imagenet or dataset")
        if self.decode not in DECODES:
            raise DataError(f"--decode {self.decode}: expected one of {', '.join(DECODES)}")
        if self.decode != "full" and self.transform != "resize":
            raise DataError(f"--decode {self.decode} needs --transform resize "
                            f"({self.transform} crops at full resolution, with PIL)")
        if self.precision not in PRECISIONS:
            raise DataError(f"--precision {self.precision}: expected one of {', '.join(PRECISIONS)}")
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
        if self.missing not in ("record", "fail"):
            raise DataError(f"--missing {self.missing}: expected record or fail")
        for name in ("batch_size", "shard_size", "bn_samples"):
            if getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1")
        Transform(self.transform, self.seed)  # raises on an unknown name

