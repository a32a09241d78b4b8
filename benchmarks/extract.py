"""Extraction pipeline throughput against the bare backbone forward, measured in one run.

Pipeline: `extract_images` end to end on N JPEG files (decode, transform, forward, transfer
back to the driver, shard writes, store assembly), its Dask cluster start included.
Baseline: the same backbone's forward on tensors already in memory, same batch size, same
torch thread count, no I/O at all, measured before and after the pipeline (the mean of both).
efficiency = pipeline images/s / bare images/s.

    .venv/bin/python benchmarks/extract.py --images 480            # ResNet-152, CPU
    python3 benchmarks/extract.py --device cuda --images 12000 --batch-size 128 --shard-size 1024 \
        --precision bf16        # benchmarks/gpu_suite.sh runs the GPU set

The last line printed is a JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run from anywhere: the project root first on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(folder: Path, n: int, width: int, height: int, seed: int, unique: int) -> None:
    """JPEGs of a typical tweet photo size, drawn with the sample corpus' painter; after
    `unique` distinct ones, copies (decoding a copy costs the same, and it is quicker to make)."""
    from pipeline.sample import CUE_CLASSES, DISTRACTOR_CLASSES, draw_image

    rng = random.Random(seed)
    classes = list(CUE_CLASSES.values()) + list(DISTRACTOR_CLASSES)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i < unique:
            img = draw_image(rng.choice(classes), rng).resize((width, height))
            img.save(folder / f"{i:07d}.jpg", quality=90)
        else:
            shutil.copyfile(folder / f"{i % unique:07d}.jpg", folder / f"{i:07d}.jpg")


def decode_only(folder: Path, threads: int) -> float:
    """Images/s of read + decode + transform alone, on `threads` threads (the pipeline's decoders)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.images import Transform, load_tensor

    files = sorted(folder.glob("*.jpg"))
    transform = Transform()

    def one(path):
        return load_tensor(path.read_bytes(), path.stem, transform)[0]

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(one, files, chunksize=64))
    assert all(code == 0 for code in codes)
    return len(files) / (time.perf_counter() - start)


def bare_forward(backbone: str, batch_size: int, threads: int, device: str, precision: str,
                 channels_last: bool, seconds: float) -> float:
    import torch

    from pipeline.backbone import ResNetFeatures

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ResNetFeatures(backbone).eval().requires_grad_(False).to(device)
    batch = torch.randn(batch_size, 3, 224, 224, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True

    def step():
        with torch.inference_mode(), torch.autocast(batch.device.type, dtype=torch.bfloat16,
                                                    enabled=precision == "bf16"):
            regions, pooled = model(batch)
        regions.to(torch.float16).cpu(), pooled.float().cpu()  # the copy back belongs to the forward

    step()
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet152")
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--size", default="500x375", help="JPEG width x height")
    parser.add_argument("--unique", type=int, default=1000, help="distinct images; the rest are copies")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="the library's default; --no-channels-last for the plain layout")
    parser.add_argument("--decode-threads", type=int, default=None)
    parser.add_argument("--bare-seconds", type=float, default=30.0)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    import torch

    from pipeline import distribute
    from pipeline.extract import ExtractConfig, extract_images

    cuda = args.device.startswith("cuda")
    workers = args.workers if args.workers is not None else (0 if cuda else distribute.default_workers())
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    width, height = map(int, args.size.split("x"))
    root = Path(args.dir or tempfile.mkdtemp(prefix="maf-bench-extract-"))
    images = root / "images"
    if not images.is_dir() or len(os.listdir(images)) != args.images:
        t = time.perf_counter()
        make_images(images, args.images, width, height, seed=0, unique=args.unique)
        print(f"made {args.images} JPEGs of {args.size} in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    def bare() -> float:
        rate = bare_forward(args.backbone, args.batch_size, threads, args.device, args.precision,
                            args.channels_last, args.bare_seconds)
        print(f"bare forward: {rate:.2f} images/s ({args.backbone}, batch {args.batch_size}, "
              f"{threads} torch threads, {args.device})", file=sys.stderr)
        return rate

    # measured before and after the pipeline: on a shared machine the speed drifts by tens of
    # percent over minutes, and the mean of both brackets the pipeline's run
    bare_before = bare()

    decode_threads = args.decode_threads or (min(16, os.cpu_count() or 1) if cuda else 1)
    decoded = decode_only(images, decode_threads)
    print(f"decode only: {decoded:.1f} images/s on {decode_threads} threads", file=sys.stderr)

    config = ExtractConfig(backbone=args.backbone, weights="none", device=args.device, batch_size=args.batch_size,
                           shard_size=args.shard_size, workers=workers, precision=args.precision,
                           channels_last=args.channels_last, decode_threads=args.decode_threads)
    out = root / "store.h5"
    start = time.perf_counter()
    summary = extract_images(images, out, config, overwrite=True)
    wall = time.perf_counter() - start
    pipeline = args.images / wall
    bare_after = bare()
    bare_mean = (bare_before + bare_after) / 2
    print(f"pipeline: {pipeline:.2f} images/s end to end ({wall:.1f} s for {args.images} images)", file=sys.stderr)
    print(json.dumps({
        "benchmark": "extract", "backbone": args.backbone, "device": args.device,
        "gpu": torch.cuda.get_device_name() if cuda else None, "cpus": os.cpu_count(),
        "images": args.images, "image_size": args.size, "batch_size": args.batch_size,
        "workers": workers, "torch_threads": threads, "precision": args.precision,
        "channels_last": args.channels_last,
        "bare_images_per_s": round(bare_mean, 3), "bare_before": round(bare_before, 3),
        "bare_after": round(bare_after, 3), "pipeline_images_per_s": round(pipeline, 3),
        "efficiency": round(pipeline / bare_mean, 3), "pipeline_seconds": round(wall, 2),
        "extract_seconds": summary["seconds"], "assemble_seconds": summary["assemble_seconds"],
        "decode_threads": decode_threads, "decode_only_images_per_s": round(decoded, 1),
        "store_mib": round(summary["bytes"] / 2**20, 1), "counts": summary["counts"],
    }))


if __name__ == "__main__":
    main()
