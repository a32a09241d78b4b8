"""Bytes written per image by extraction: what this process hands to write() (/proc/self/io
wchar) while `extract_images` runs in-process, against the size of one store row.

    .venv/bin/python benchmarks/bytes_written.py [--images 128] [--backbone resnet18]

The final line is JSON. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from pipeline.backbone import BACKBONES, GRID
    from pipeline.extract import ExtractConfig, extract_images

    root = Path(tempfile.mkdtemp(prefix="maf-bytes-"))
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for n in range(args.images):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(root / "images" / f"{n:05d}.jpg")
    config = ExtractConfig(backbone=args.backbone, weights="none", workers=0, shard_size=32)
    before = written()
    extract_images(root / "images", root / "store.h5", config)
    total = written() - before
    channels = BACKBONES[args.backbone]
    row = GRID * GRID * channels * 2 + channels * 4 + 1
    print(json.dumps({"benchmark": "bytes_written", "backbone": args.backbone, "images": args.images,
                      "bytes_per_image": round(total / args.images), "row_bytes": row,
                      "writes_per_row": round(total / args.images / row, 2),
                      "store_bytes_per_image": round((root / "store.h5").stat().st_size / args.images)}))


if __name__ == "__main__":
    main()
