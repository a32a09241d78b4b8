"""The original design, kept as a baseline: the frozen ResNet runs inside every training step.

`OnlineFeatures` is a `FeatureSource`: it answers `gather(ids)` like a FeatureStore, but reads, decodes, transforms
and runs the backbone on every call. `maf train --images DIR` uses it, so that the cost of
not caching can be measured on the same code path (benchmarks/epoch.py measures it too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from maf_core.inference import resolve_device
from pipeline.backbone import ResNetFeatures, resolve_weights
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig
from pipeline.fingerprint import fingerprint
from pipeline.images import STATUS, ImageIndex, Transform, load_tensor, normalise, read_image_bytes
from pipeline.store import Features, FeatureSource, FeatureStore


class OnlineFeatures:
    def __init__(self, images_dir: str | Path, config: ExtractConfig, device: str | torch.device = "cpu") -> None:
        if config.bn_stats != "imagenet":
            raise DataError("--images (features computed in every step) supports --bn-stats imagenet only; "
                            "extract a store with maf-pipe extract-images for AdaBN statistics")
        self.path = Path(images_dir)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: no such images directory")
        self.index = ImageIndex(self.path)
        state, identity = resolve_weights(config.backbone, config.weights, config.seed)
        self.fingerprint = fingerprint(config, identity)
        self.model = ResNetFeatures(config.backbone)
        self.model.load_state_dict(state)
        self.device = torch.device(device)
        self.model.eval().requires_grad_(False).to(self.device)
        self.transform = Transform(config.transform, config.seed)
        self.max_pixels = config.max_pixels
        self.channels, self.num_regions = self.model.channels, 49

    def __contains__(self, image_id: str) -> bool:
        return True  # every id gets features or a status, as in a store

    def bn_stats(self) -> None:
        return None

    def statuses(self, image_ids: Sequence[str]) -> None:
        return None  # known only when gather reads each image

    @torch.no_grad()
    def gather(self, image_ids: Sequence[str]) -> Features:
        arrays, status = [], np.zeros(len(image_ids), np.uint8)
        for n, image_id in enumerate(image_ids):
            code, data = read_image_bytes(self.index, image_id)
            array = None
            if code == STATUS["ok"]:
                code, array = load_tensor(data, image_id, self.transform, self.max_pixels)
            status[n] = code
            arrays.append(array if array is not None else np.zeros((3, 224, 224), np.uint8))
        batch = normalise(torch.from_numpy(np.stack(arrays)).to(self.device))
        regions, pooled = self.model(batch)
        regions = regions.to(torch.float16).cpu().numpy()
        pooled = pooled.float().cpu().numpy()
        bad = status != STATUS["ok"]
        regions[bad], pooled[bad] = 0, 0
        return Features(regions, pooled, status)


def features_source(features: str | Path | None, images_dir: str | Path | None, config: ExtractConfig,
                    device: str) -> FeatureSource:
    """What `maf train` reads images from: the store.h5 at --features, or OnlineFeatures over
    --images DIR (the backbone in every step); exactly one of them."""
    if (features is None) == (images_dir is None):
        raise DataError(
            "give exactly one of --features store.h5 (cached features) and --images DIR (the ResNet in every step)"
        )
    return FeatureStore(features) if images_dir is None else OnlineFeatures(images_dir, config, resolve_device(device))
