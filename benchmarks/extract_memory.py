"""Peak memory of extraction for 500 vs 5,000 images: it must not grow with the image count.

Runs `maf-pipe extract-images` (default Dask local cluster, ResNet-18, random weights, small
JPEGs) as a child process and samples the resident memory of its whole process tree (driver,
scheduler, nanny and worker processes) every 50 ms. Reported: peak of the tree's summed RSS
and of the driver alone, per image count, and their ratios. The final line is JSON.

    .venv/bin/python benchmarks/extract_memory.py [--small 500 --large 5000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:06d}.jpg", quality=85)


def peak_rss(cmd: list[str]) -> dict:
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent = psutil.Process(proc.pid)
    peak_tree = peak_driver = 0
    start = time.perf_counter()
    while proc.poll() is None:
        try:
            driver = parent.memory_info().rss
            tree = driver
            for child in parent.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak_tree, peak_driver = max(peak_tree, tree), max(peak_driver, driver)
        time.sleep(0.05)
    output = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"extraction failed:\n{output}")
    return {"peak_tree_mib": round(peak_tree / 2**20, 1), "peak_driver_mib": round(peak_driver / 2**20, 1),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maf-bench-mem-"))
    maf_pipe = str(Path(sys.executable).with_name("maf-pipe"))
    results = {}
    for n in (args.small, args.large):
        images = root / f"images{n}"
        make_images(images, n)
        cmd = [maf_pipe, "extract-images", str(images), "--out", str(root / f"store{n}.h5"),
               "--backbone", args.backbone, "--weights", "none"]
        results[n] = peak_rss(cmd)
        print(f"{n} images: {results[n]}", file=sys.stderr)
    small, large = results[args.small], results[args.large]
    print(json.dumps({
        "benchmark": "extract_memory", "backbone": args.backbone,
        "small": {"images": args.small, **small}, "large": {"images": args.large, **large},
        "tree_ratio": round(large["peak_tree_mib"] / small["peak_tree_mib"], 3),
        "driver_ratio": round(large["peak_driver_mib"] / small["peak_driver_mib"], 3),
    }))


if __name__ == "__main__":
    main()
