"""The worker side of `maf-pipe extract-images`: what a Dask worker preloads and runs.

One model per worker process, built on its first task and kept; each task decodes a shard's
images (with a pool, the next batch during the forward) and runs them through the frozen
backbone, with one batch in flight while the one before is copied out.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import distribute
from pipeline.backbone import BACKBONES, GRID, ResNetFeatures, estimate_bn_stats
from pipeline.device_decode import decode_on_device, jpeg_for_device
from pipeline.extract_config import ExtractConfig
from pipeline.images import STATUS, Transform, load_tensor, normalise
from pipeline.store import Shard


@dataclass(frozen=True)
class ShardJob:
    """What every worker task reads besides its images and the weights; picklable, so Dask ships it."""

    key: str                  # the job record's hash: a worker keeps its model while this stays the same
    backbone: str
    channels: int
    transform: str
    seed: int
    max_pixels: int
    precision: str
    channels_last: bool
    device: str
    batch_size: int
    threads: int | None       # torch threads per task; None: the worker's cores over its task threads
    decode_threads: int       # > 1: a pool decodes the next batch during the forward
    decode: str = "full"      # full | fast | device (ExtractConfig.decode)

    @classmethod
    def of(cls, config: ExtractConfig, key: str) -> ShardJob:
        """The job of a planned config (`plan_workers`: decode_threads resolved)."""
        assert config.decode_threads is not None, "plan_workers(config) first"
        return cls(key=key, backbone=config.backbone, channels=BACKBONES[config.backbone],
                   transform=config.transform, seed=config.seed, max_pixels=config.max_pixels,
                   precision=config.precision, channels_last=config.channels_last, device=config.device,
                   batch_size=config.batch_size, threads=config.threads, decode_threads=config.decode_threads,
                   decode=config.decode)


_MODEL: dict = {}  # one model per worker process, built on its first task and kept
_MODEL_LOCK = threading.Lock()  # tasks of one worker may start together on its threads


def _worker_model(job: ShardJob, state: dict) -> tuple[ResNetFeatures, torch.device]:
    # every task: Dask runs tasks on pool threads, and a new thread starts from OMP_NUM_THREADS=1
    torch.set_num_threads(job.threads or max(1, (os.cpu_count() or 1) // distribute.worker_threads()))
    with _MODEL_LOCK:
        model, device = _build_model(job, state)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # per thread: pinned buffers and streams belong to this GPU
    return model, device


def _build_model(job: ShardJob, state: dict) -> tuple[ResNetFeatures, torch.device]:
    if _MODEL.get("key") != job.key:
        if job.device.startswith("cuda"):
            index = distribute.worker_index() % torch.cuda.device_count()
            device = torch.device(job.device if ":" in job.device else f"cuda:{index}")
            tf32 = job.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        else:
            device = torch.device("cpu")
        with torch.device("meta"):  # no random init to throw away (seconds for ResNet-152)
            model = ResNetFeatures(job.backbone)
        model.load_state_dict(state, assign=True)
        model.eval().requires_grad_(False).to(device)
        if job.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _MODEL.clear()
        _MODEL.update(key=job.key, model=model, device=device,
                      pool=ThreadPoolExecutor(job.decode_threads) if job.decode_threads > 1 else None)
    return _MODEL["model"], _MODEL["device"]


_ON_DEVICE = "device"  # a decode result that says: decode this JPEG on the device, with its batch


def _decoded_batches(items, job: ShardJob, device: torch.device):
    """Yield (first position, [(status, image or None)]) per batch, an image being a uint8
    (3, S, S) array, or a tensor on `device` for JPEGs decoded there (--decode device).
    With a pool, the next batch is read while the caller runs the current one through the model."""
    transform = Transform(job.transform, job.seed)
    pool = _MODEL.get("pool")

    def decode(item):
        image_id, status, data = item
        if status != STATUS["ok"]:
            return status, None
        if job.decode == "device" and jpeg_for_device(data, job.max_pixels):
            return _ON_DEVICE, data
        return load_tensor(data, image_id, transform, job.max_pixels, fast=job.decode == "fast")

    def decode_waiting_on_device(chunk, results):
        """The batch's device JPEGs decoded together; one the decoder refuses goes through PIL."""
        waiting = [n for n, (code, _) in enumerate(results) if code == _ON_DEVICE]
        if not waiting:
            return results
        images = decode_on_device([results[n][1] for n in waiting], device, transform.size)
        for n, image in zip(waiting, images):
            image_id, _, data = chunk[n]
            results[n] = (STATUS["ok"], image) if image is not None else load_tensor(
                data, image_id, transform, job.max_pixels)
        return results

    size = job.batch_size
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    if pool is None:
        for n, chunk in enumerate(chunks):
            yield n * size, decode_waiting_on_device(chunk, [decode(item) for item in chunk])
        return
    pending = [pool.submit(decode, item) for item in chunks[0]] if chunks else []
    for n in range(len(chunks)):
        ahead = [pool.submit(decode, item) for item in chunks[n + 1]] if n + 1 < len(chunks) else []
        yield n * size, decode_waiting_on_device(chunks[n], [f.result() for f in pending])
        pending = ahead


def _model_input(images: list, device: torch.device, job: ShardJob) -> torch.Tensor:
    """uint8 images → a normalised float batch on `device`. Arrays are copied as uint8 (4x fewer
    bytes than floats), through pinned memory on CUDA; tensors already there stay there."""
    host = [n for n, image in enumerate(images) if isinstance(image, np.ndarray)]
    arrays = torch.from_numpy(np.stack([images[n] for n in host])) if host else None
    if arrays is not None and device.type == "cuda":
        arrays = arrays.pin_memory().to(device, non_blocking=True)
    if len(host) == len(images):
        batch = arrays
    else:  # some decoded on the device: the batch in its order
        from_host = dict(zip(host, arrays)) if host else {}
        batch = torch.stack([from_host.get(n, image) for n, image in enumerate(images)])
    batch = normalise(batch)
    if job.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def _launch(model, device, job: ShardJob, images: list) -> tuple:
    """Start one batch's forward and its copy back; `_land` waits for it. On CUDA the copies go
    into pinned memory without blocking, so the next batch is queued before this one is read."""
    batch = _model_input(images, device, job)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.precision == "bf16"):
        regions, pooled = model(batch)
        regions, pooled = regions.to(torch.float16), pooled.float()
        if device.type != "cuda":
            return regions, pooled, None
        host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in (regions, pooled))
        for target, source in zip(host, (regions, pooled)):
            target.copy_(source, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(device))  # the stream the copies were queued on
    return *host, done


def _land(launched: tuple) -> tuple[np.ndarray, np.ndarray]:
    regions, pooled, done = launched
    if done is not None:
        done.synchronize()
    return regions.numpy(), pooled.numpy()


def extract_shard(items: list[tuple[str, int, bytes | None]], job: ShardJob, state: dict) -> Shard:
    """Worker task: (id, driver status, file bytes) per image → a Shard (zeros where not ok).

    Batch n + 1 is read and its forward queued before the features of batch n are copied out,
    so the device need not wait while the host stores one batch's results."""
    model, device = _worker_model(job, state)
    n, channels = len(items), job.channels
    regions = np.zeros((n, GRID * GRID, channels), np.float16)
    pooled = np.zeros((n, channels), np.float32)
    status = np.zeros(n, np.uint8)
    in_flight = None  # (rows, launched) of the batch before

    def store(rows, launched):
        regions[rows], pooled[rows] = _land(launched)

    for start, decoded in _decoded_batches(items, job, device):
        rows, images = [], []
        for offset, (code, image) in enumerate(decoded):
            status[start + offset] = code
            if image is not None:
                rows.append(start + offset)
                images.append(image)
        if images:
            launched = (rows, _launch(model, device, job, images))
            if in_flight:
                store(*in_flight)
            in_flight = launched
    if in_flight:
        store(*in_flight)
    return Shard([item[0] for item in items], regions, pooled, status)


def estimate_shard_bn(items: list[tuple[str, int, bytes | None]], job: ShardJob, state: dict) -> dict:
    """Worker task: AdaBN statistics from a sample of images (BatchNorm buffers, on the CPU)."""
    _MODEL.clear()  # the model below gets new statistics; build a fresh one afterwards
    model, device = _worker_model(job, state)

    def batches():
        for _, decoded in _decoded_batches(items, job, device):
            images = [image for _, image in decoded if image is not None]
            if images:
                yield _model_input(images, device, job)

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.precision == "bf16"):
        buffers = estimate_bn_stats(model, batches())
    _MODEL.clear()
    return {k: v.cpu() for k, v in buffers.items()}

