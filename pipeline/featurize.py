"""Features of images held in memory, made as `extract-images` makes them, without a store file.

What `maf serve` runs on uploaded images: the same worker code as extraction (`extract_shard`:
decoding with the pipeline's limits, the transform, the frozen backbone built once and kept),
the same weights and BatchNorm statistics, and a fingerprint built by the same rules, which
the caller compares with its run's. `MemoryStore` reads the result as a `FeatureStore` reads a
file: both are a `FeatureSource`, so prediction takes either.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from pipeline.backbone import resolve_weights, state_sha256
from pipeline.errors import DataError
from pipeline.extract import plan_workers
from pipeline.extract_config import ExtractConfig
from pipeline.extract_worker import ShardJob, extract_shard
from pipeline.fingerprint import fingerprint
from pipeline.images import MAX_FILE_BYTES, STATUS
from pipeline.store import Features, Shard


def byte_status(data: bytes | None) -> int:
    """The status an image gets from its bytes alone, before decoding (as `locate` gives a file's)."""
    if data is None:
        return STATUS["missing"]
    if len(data) == 0:
        return STATUS["empty"]
    if len(data) > MAX_FILE_BYTES:
        return STATUS["too_large"]
    return STATUS["ok"]


class ImageFeaturizer:
    """The backbone of `config` (an `ExtractConfig`, e.g. `extract_config_of` a run's store),
    in this process. `extract` turns (id, bytes or None) pairs into a `Shard`: a status per
    image (decoding errors and decompression bombs included), features where it is ok."""

    def __init__(self, config: ExtractConfig) -> None:
        config.validate()
        state, identity = resolve_weights(config.backbone, config.weights, config.seed)
        features_fingerprint = fingerprint(config, identity)
        if config.bn_stats == "dataset":
            buffers = config.bn_buffers
            if buffers is None:
                raise DataError("--bn-stats dataset: the BatchNorm statistics of the store are needed")
            tensors = {k: torch.as_tensor(v) for k, v in buffers.items()}
            state = {**state, **tensors}
            features_fingerprint["bn_stats"] = dict(features_fingerprint["bn_stats"], sha256=state_sha256(tensors))
        self.fingerprint = features_fingerprint
        self.state = state
        key = hashlib.sha256(json.dumps({"in-memory": features_fingerprint}, sort_keys=True).encode()).hexdigest()
        self.job = ShardJob.of(plan_workers(replace(config, workers=0, scheduler=None)), key=key)

    def extract(self, images: Sequence[tuple[str, bytes | None]]) -> Shard:
        items = [(image_id, byte_status(data), data if byte_status(data) == STATUS["ok"] else None)
                 for image_id, data in images]
        return extract_shard(items, self.job, self.state)


class MemoryStore:
    """A `Shard` read as a `FeatureStore` is read (a `FeatureSource`, with `image_ids`, `status`
    and `rows` as a store has them)."""

    def __init__(self, shard: Shard, fingerprint: dict, path: str = "images in memory") -> None:
        self.path, self.fingerprint = path, fingerprint
        self.image_ids, self.status = list(shard.image_ids), shard.status
        self.rows = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self.num_regions, self.channels = shard.regions.shape[1:]
        self._shard = shard

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.rows

    def gather(self, image_ids: Sequence[str]) -> Features:
        rows = np.fromiter((self.rows[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
        return Features(self._shard.regions[rows], self._shard.pooled[rows], self.status[rows])

    def statuses(self, image_ids: Sequence[str]) -> np.ndarray:
        return self.status[[self.rows[i] for i in image_ids]]

    def bn_stats(self) -> None:
        return None  # the featurizer's statistics are in its fingerprint; nothing to copy into a run
