"""Seconds per training step (forward + backward + AdamW) and peak memory of MAF vs its
text-only config (encoder-CRF), for encoders of BERT-base and RoBERTa-large size.

Random init (same cost as pretrained), batch 16 x 40 word pieces, 49 x 2048 regions, BIOES
tags over 4 types, on this machine's CPU, in one run. Each measurement runs in its own
process, so its peak resident memory (ru_maxrss) is its own. The ratio is the cost of MAF's
CA, CI, CM and CF on top of the encoder-CRF. The final line is JSON.

    .venv/bin/python benchmarks/model_step.py [--steps 5] [--encoders bert-base,roberta-large]
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
# the sizes of the published configs (bert-base-cased, bert-large-cased, roberta-large, xlm-roberta-large)
ENCODERS = {
    "bert-base": ("bert", dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072)),
    "bert-large": ("bert", dict(vocab_size=28996, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096)),
    "roberta-large": ("roberta", dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                      intermediate_size=4096, max_position_embeddings=514, pad_token_id=1,
                                      type_vocab_size=1)),
    "xlm-roberta-large": ("xlm-roberta", dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                                              num_attention_heads=16, intermediate_size=4096,
                                              max_position_embeddings=514, pad_token_id=1, type_vocab_size=1)),
}


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


def measure(encoder: str, text_only: bool, args) -> dict:
    """One (encoder, MAF or text-only) measurement, in this process."""
    import resource

    from transformers import AutoConfig

    from maf_core.config import MAFConfig

    model_type, sizes = ENCODERS[encoder]
    encoder_config = AutoConfig.for_model(model_type, **sizes).to_dict()
    config = MAFConfig.from_preset("paper", bert_config=encoder_config, vocab_size=sizes["vocab_size"], tags=TAGS,
                                   dropout=0.1).with_ablation(text_only=text_only)
    batch = make_batch(args.batch_size, args.pieces, args.words, config.image_dim, sizes["vocab_size"], len(TAGS))
    seconds = time_steps(config, batch, args.steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"encoder": encoder, "model": "text-only" if text_only else "MAF", "s_per_step": round(seconds, 3),
            "peak_rss_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", default="bert-base,roberta-large",
                        help=f"comma-separated, of {', '.join(ENCODERS)}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # ENCODER:maf|text-only, in a child process
    args = parser.parse_args()
    if args.one:
        encoder, model = args.one.split(":")
        print(json.dumps(measure(encoder, model == "text-only", args)))
        return

    import subprocess

    import torch

    rows = []
    for encoder in args.encoders.split(","):
        for model in ("maf", "text-only"):
            done = subprocess.run([sys.executable, __file__, "--one", f"{encoder}:{model}", "--steps", str(args.steps),
                                   "--batch-size", str(args.batch_size), "--pieces", str(args.pieces),
                                   "--words", str(args.words)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{encoder:<18} {rows[-1]['model']:<9} {rows[-1]['s_per_step']:7.3f} s/step "
                  f"{rows[-1]['peak_rss_mib']:6d} MiB peak", file=sys.stderr)
    by = {(r["encoder"], r["model"]): r for r in rows}
    print(json.dumps({
        "benchmark": "model_step", "batch_size": args.batch_size, "pieces": args.pieces, "words": args.words,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "steps_timed": args.steps, "runs": rows,
        "maf_over_text_only": {e: round(by[(e, "MAF")]["s_per_step"] / by[(e, "text-only")]["s_per_step"], 3)
                               for e in args.encoders.split(",")},
    }))


if __name__ == "__main__":
    main()
