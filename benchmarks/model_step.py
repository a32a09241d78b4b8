"""Seconds per training step (forward + backward + AdamW) of MAF vs its text-only config (BERT-CRF).

BERT-base size (random init: same cost as pretrained), batch 16 x 40 word pieces, 49 x 2048
regions, BIOES tags over 4 types, on this machine's CPU, in one run. The ratio is the cost
of MAF's CA, CI, CM and CF on top of BERT-CRF. The final line is JSON.

    .venv/bin/python benchmarks/model_step.py [--steps 5] [--size base]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TAGS = ["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC") for p in "BIES"]


def make_batch(batch: int, pieces: int, words: int, image_dim: int, vocab: int, num_tags: int):
    import torch

    g = torch.Generator().manual_seed(0)
    word_starts = torch.arange(1, words + 1).repeat(batch, 1)  # simple: one piece per word, then extra pieces
    return {
        "input_ids": torch.randint(5, vocab, (batch, pieces), generator=g),
        "attention_mask": torch.ones(batch, pieces, dtype=torch.long),
        "word_starts": word_starts,
        "word_mask": torch.ones(batch, words, dtype=torch.bool),
        "regions": torch.rand(batch, 49, image_dim, generator=g).half(),
        "pooled": torch.rand(batch, image_dim, generator=g),
        "image_ok": torch.ones(batch, dtype=torch.bool),
        "tags": torch.randint(0, num_tags, (batch, words), generator=g),
    }


def time_steps(config, batch: dict, steps: int) -> float:
    import torch

    from maf_core.model import MAF

    torch.manual_seed(0)
    model = MAF(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)

    def step():
        out = model(**batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # warm-up: allocations, AdamW state
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]  # median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    import torch

    from maf_core.config import MAFConfig

    config = MAFConfig.from_preset("paper", bert_size=args.size, tags=TAGS, dropout=0.1)
    batch = make_batch(args.batch_size, args.pieces, args.words, config.image_dim, config.vocab_size, len(TAGS))
    maf = time_steps(config, batch, args.steps)
    print(f"MAF: {maf:.3f} s/step", file=sys.stderr)
    text_only = time_steps(config.with_ablation(text_only=True), batch, args.steps)
    print(f"text only (BERT-CRF): {text_only:.3f} s/step", file=sys.stderr)
    print(json.dumps({
        "benchmark": "model_step", "bert_size": args.size, "batch_size": args.batch_size, "pieces": args.pieces,
        "words": args.words, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "steps_timed": args.steps,
        "maf_s_per_step": round(maf, 3), "text_only_s_per_step": round(text_only, 3),
        "maf_over_text_only": round(maf / text_only, 3),
    }))


if __name__ == "__main__":
    main()
