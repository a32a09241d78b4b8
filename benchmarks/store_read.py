"""Random batch reads from a feature store: FeatureStore (memory map) vs in-RAM numpy vs h5py.

A 2,000-image store with ResNet-152 shapes (49 x 2048 float16 regions, 2048 float32 pooled)
is written the way extraction writes it. Then random batches of 64 ids are gathered:
- ours: `FeatureStore(path).gather(ids)` (id lookup + memory-map gather), warm (one pass first);
- in-memory: the same arrays already in RAM, numpy fancy indexing by row;
- h5py: fancy indexing on the datasets (sorted rows, as h5py requires), the way to avoid.

At these sizes a gather is bounded by memory bandwidth, so one short pass of each reader
measures mostly the machine's state at that moment. The readers are therefore timed in
rounds (ours, in-memory, h5py, then the next round in the next order), each reading the same
batches in every round, so that the machine's drift falls on all of them alike. Each
reader's rate is its median over rounds, and each ratio is the median of the per-round
ratios with its spread (the lowest and highest per-round ratio), as benchmarks/model_step.py
reports its step times. The final line is JSON.

    .venv/bin/python benchmarks/store_read.py [--images 2000] [--rounds 15] [--batches 300]
"""
from __future__ import annotations

import argparse
import json
import shutil
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


def timed(fn, batches: list) -> float:
    """Samples per second of one pass of `fn` over `batches`."""
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    return sum(len(batch) for batch in batches) / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def interleaved(readers: dict[str, tuple], rounds: int) -> dict[str, list[float]]:
    """Samples/s of each reader per round; round r starts at reader r (mod the number of
    readers), so that no reader always runs first or after the same one."""
    names = list(readers)
    for fn, batches in readers.values():  # warm-up: caches, allocations
        fn(batches[0])
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, batches = readers[name]
            rates[name].append(timed(fn, batches))
    return rates


def ratio(a: list[float], b: list[float]) -> dict[str, float]:
    """Median of the per-round ratios a / b, with the lowest and highest."""
    per_round = [x / y for x, y in zip(a, b)]
    return {"median": round(median(per_round), 3), "low": round(min(per_round), 3), "high": round(max(per_round), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15, help="timed passes of each reader, interleaved")
    parser.add_argument("--batches", type=int, default=300, help="random batches per pass (ours and in-memory)")
    parser.add_argument("--h5py-batches", type=int, default=4,
                        help="batches per pass for h5py, about 250 samples/s (its rate is per sample, as the others')")
    args = parser.parse_args()

    import h5py

    from pipeline.store import FeatureStore

    folder = Path(tempfile.mkdtemp(prefix="maf-bench-store-"))
    path = folder / "store.h5"
    write_store(path, args.images, args.channels)
    rng = np.random.default_rng(1)
    batches_rows = [rng.choice(args.images, args.batch_size, replace=False) for _ in range(args.batches)]

    store = FeatureStore(path)
    batches_ids = [[store.image_ids[r] for r in rows] for rows in batches_rows]
    for start in range(0, args.images, 256):  # warm: every page read once
        store.gather(rows=np.arange(start, min(start + 256, args.images)))
    with h5py.File(path, "r") as f:
        regions, pooled, status = f["regions"][:], f["pooled"][:], f["status"][:]
    with h5py.File(path, "r") as f:
        dr, dp, ds = f["regions"], f["pooled"], f["status"]

        def h5_gather(rows):
            rows = np.sort(rows)
            return dr[rows], dp[rows], ds[rows]

        rates = interleaved({
            "ours": (store.gather, batches_ids),
            "in_memory": (lambda rows: (regions[rows], pooled[rows], status[rows]), batches_rows),
            "h5py": (h5_gather, batches_rows[:args.h5py_batches]),
        }, args.rounds)

    rate = {name: median(values) for name, values in rates.items()}
    versus_memory, versus_h5py = ratio(rates["ours"], rates["in_memory"]), ratio(rates["ours"], rates["h5py"])
    print(f"ours (memory map, by id) {rate['ours']:,.0f} samples/s; in-memory numpy {rate['in_memory']:,.0f}; "
          f"h5py fancy indexing {rate['h5py']:,.0f} (medians of {args.rounds} rounds)", file=sys.stderr)
    print(f"ours / in-memory {versus_memory['median']} ({versus_memory['low']}-{versus_memory['high']}); "
          f"ours / h5py {versus_h5py['median']} ({versus_h5py['low']}-{versus_h5py['high']})", file=sys.stderr)
    print(json.dumps({
        "benchmark": "store_read", "images": args.images, "channels": args.channels,
        "batch_size": args.batch_size, "store_mib": round(path.stat().st_size / 2**20, 1), "rounds": args.rounds,
        "batches": args.batches, "h5py_batches": args.h5py_batches,
        "samples_per_s": {name: round(value) for name, value in rate.items()},
        "per_round": {name: [round(value) for value in values] for name, values in rates.items()},
        "ratio_vs_in_memory": versus_memory, "ratio_vs_h5py": versus_h5py,
    }))
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
