"""Random batch reads from a feature store: FeatureStore (memory map) vs in-RAM numpy vs h5py.

A 2,000-image store with ResNet-152 shapes (49 x 2048 float16 regions, 2048 float32 pooled)
is written the way extraction writes it. Then random batches of 64 ids are gathered:
- ours: `FeatureStore(path).gather(ids)` (id lookup + memory-map gather), warm (one pass first);
- in-memory: the same arrays already in RAM, numpy fancy indexing by row;
- h5py: fancy indexing on the datasets (sorted rows, as h5py requires), the way to avoid.
All in one run; the final line is JSON.

    .venv/bin/python benchmarks/store_read.py [--images 2000] [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_store(path: Path, n: int, channels: int, seed: int = 0) -> None:
    from pipeline.store import RowsFile, Shard

    rng = np.random.default_rng(seed)
    rows = RowsFile(path.parent / f".{path.name}.partial")
    rows.create([f"{i:09d}" for i in range(n)], channels, 49)
    for start in range(0, n, 256):
        m = min(256, n - start)
        ids = [f"{i:09d}" for i in range(start, start + m)]
        shard = Shard(ids, rng.standard_normal((m, 49, channels), dtype=np.float32).astype(np.float16),
                      rng.standard_normal((m, channels), dtype=np.float32), np.zeros(m, np.uint8))
        rows.write(start, shard)
    rows.publish(path, {"benchmark": True})


def rate(fn, batches: list, seconds: float) -> float:
    for batch in batches[:3]:
        fn(batch)
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn(batches[i % len(batches)])
        done += len(batches[i % len(batches)])
        i += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    import h5py

    from pipeline.store import FeatureStore

    folder = Path(tempfile.mkdtemp(prefix="maf-bench-store-"))
    path = folder / "store.h5"
    write_store(path, args.images, args.channels)
    rng = np.random.default_rng(1)
    batches_rows = [rng.choice(args.images, args.batch_size, replace=False) for _ in range(200)]

    store = FeatureStore(path)
    batches_ids = [[store.image_ids[r] for r in rows] for rows in batches_rows]
    for start in range(0, args.images, 256):  # warm: every page read once
        store.gather(rows=np.arange(start, min(start + 256, args.images)))
    ours = rate(store.gather, batches_ids, args.seconds)

    with h5py.File(path, "r") as f:
        regions, pooled, status = f["regions"][:], f["pooled"][:], f["status"][:]
    in_memory = rate(lambda rows: (regions[rows], pooled[rows], status[rows]), batches_rows, args.seconds)

    with h5py.File(path, "r") as f:
        dr, dp, ds = f["regions"], f["pooled"], f["status"]

        def h5_gather(rows):
            rows = np.sort(rows)
            return dr[rows], dp[rows], ds[rows]

        h5 = rate(h5_gather, batches_rows, min(args.seconds, 3.0))

    print(f"ours (memory map, by id) {ours:,.0f} samples/s; in-memory numpy {in_memory:,.0f}; "
          f"h5py fancy indexing {h5:,.0f}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "store_read", "images": args.images, "channels": args.channels,
        "batch_size": args.batch_size, "store_mib": round(path.stat().st_size / 2**20, 1),
        "ours_samples_per_s": round(ours), "in_memory_samples_per_s": round(in_memory),
        "h5py_fancy_samples_per_s": round(h5), "ratio_vs_in_memory": round(ours / in_memory, 3),
        "ratio_vs_h5py": round(ours / h5, 1),
    }))


if __name__ == "__main__":
    main()
