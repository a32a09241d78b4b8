"""One training epoch three ways, same model, same tweets, same run:

- store: batches joined with store.h5 through FeatureStore (what `maf train` does: tweets
  of similar length batched together, rows in random order inside);
- random: the same with random batches (`--batching random`, the released code's sampler),
  which pad to the longest of a random 16 (grouping_speedup = random / store);
- memory: the same features already as tensors in RAM (the floor for any cache);
- original: the published code bases' design: every tweet padded to 128 pieces, every
  image read, decoded, resized and run through the frozen ResNet-152 inside every step
  (maf_core.online.OnlineFeatures, the path of `maf train --images`).

overhead_ratio = store / memory (goal <= 1.05); speedup_vs_original = original / store
(goal >= 4). BERT-base size by default, on this CPU; the final line is JSON.

    .venv/bin/python benchmarks/epoch.py [--tweets 270] [--bert base] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepare(root: Path, tweets: int) -> dict:
    from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
    from pipeline.sample import make_sample
    from pipeline.tokenization import tokenize_corpus
    from pipeline.vocab import build_vocab

    data, text, store = root / "data", root / "text", root / "store.h5"
    if not (data / "train.txt").is_file():
        make_sample(data, tweets=tweets, seed=0)
        build_vocab(data, root / "tok", vocab_size=2000)
        tokenize_corpus(data, str(root / "tok"), text)
    if not store.is_file():
        extract_images(data / "images", store, ExtractConfig(backbone="resnet152", weights="none", bn_stats="dataset",
                                                             bn_samples=64, workers=0), ids=ids_from_corpus(data))
    return {"data": data, "text": text, "store": store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tweets", type=int, default=270, help="sample corpus size; 60%% of it is the train split")
    parser.add_argument("--bert", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from maf_core.config import MAFConfig, TrainConfig
    from maf_core.data import bucketed_batches, collate, load_split
    from maf_core.model import MAF
    from maf_core.online import OnlineFeatures
    from maf_core.optim import optimizer_for
    from maf_core.train import train_step
    from pipeline.extract import ExtractConfig
    from pipeline.store import FeatureStore
    from pipeline.tokenization import read_meta

    root = Path(args.dir or tempfile.mkdtemp(prefix="maf-bench-epoch-"))
    paths = prepare(root, args.tweets)
    meta = read_meta(paths["text"])
    split = load_split(paths["text"], "train")
    store = FeatureStore(paths["store"])
    config = MAFConfig.from_preset("paper", bert_size=args.bert, tags=meta["tags"],
                                   vocab_size=meta["tokenizer"]["vocab_size"])
    lengths = [len(x) for x in split.input_ids]
    grouped = bucketed_batches(lengths, args.batch_size, shuffle=True, seed=0)
    random_batches = bucketed_batches(lengths, args.batch_size, shuffle=True, seed=0, by_length=False)

    def epoch(make_batch, batches=grouped) -> float:
        torch.manual_seed(0)
        model = MAF(config).train()
        optimizer = optimizer_for(model, TrainConfig())
        start = time.perf_counter()
        for step, indices in enumerate(batches):
            train_step(model, optimizer, make_batch(indices), torch.device("cpu"),
                       generator=torch.Generator().manual_seed(step))
        return time.perf_counter() - start

    # memory: every tweet's features gathered once, as tensors
    all_features = store.gather(split.image_ids)
    regions_all = torch.from_numpy(np.ascontiguousarray(all_features.regions))
    pooled_all = torch.from_numpy(all_features.pooled)
    ok_all = torch.from_numpy(all_features.status == 0)

    def from_memory(indices):
        batch = collate(split, indices, None)
        index = torch.tensor(indices)
        batch.update(regions=regions_all[index], pooled=pooled_all[index], image_ok=ok_all[index])
        return batch

    # original: pad to 128, decode + resize + ResNet-152 on every step (what `maf train --images` runs)
    online = OnlineFeatures(paths["data"] / "images", ExtractConfig(backbone="resnet152", weights="none"))

    def original(indices):
        batch = collate(split, indices, online)
        pad = 128 - batch["input_ids"].shape[1]
        batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, pad))
        batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, pad))
        return batch

    print(f"{len(split)} train tweets, {len(grouped)} steps of {args.batch_size}, BERT {args.bert}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    epoch(lambda indices: collate(split, indices, store))  # warm-up: allocator, page cache
    memory = epoch(from_memory)
    stored = epoch(lambda indices: collate(split, indices, store))
    memory_again = epoch(from_memory)
    unsorted = epoch(lambda indices: collate(split, indices, store), random_batches)
    print(f"store {stored:.1f} s, memory {memory:.1f} / {memory_again:.1f} s, random batches {unsorted:.1f} s",
          file=sys.stderr)
    orig = epoch(original)
    print(f"original design {orig:.1f} s", file=sys.stderr)
    memory_mean = (memory + memory_again) / 2
    print(
        json.dumps(
            {
                "benchmark": "epoch",
                "bert": args.bert,
                "train_tweets": len(split),
                "steps": len(grouped),
                "batch_size": args.batch_size,
                "cpus": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "store_s": round(stored, 2),
                "memory_s": round(memory_mean, 2),
                "memory_runs_s": [round(memory, 2), round(memory_again, 2)],
                "original_s": round(orig, 2),
                "overhead_ratio": round(stored / memory_mean, 3),
                "speedup_vs_original": round(orig / stored, 2),
                "random_batches_s": round(unsorted, 2),
                "grouping_speedup": round(unsorted / stored, 3),
                "mean_pieces": round(float(np.mean([len(x) for x in split.input_ids])), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
