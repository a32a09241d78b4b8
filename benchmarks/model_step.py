"""Seconds per training step (forward + backward + AdamW) and peak memory of MAF, UMT-BERT-CRF,
MT-BERT-CRF and the text-only encoder-CRF (BERT-CRF), for encoders of BERT-base and
RoBERTa-large size.

Random init (same cost as pretrained), batch 16 x 40 word pieces, 49 x 2048 regions, BIOES
tags over 4 types, on this machine's CPU. Step times: the models are built once in one
process and timed in rounds (MAF, UMT, MT, BERT-CRF, MAF, UMT, ...), one step each per
round, so that the machine's drift falls on all of them alike; each model's time is its
median over rounds, and each ratio against BERT-CRF is the median of the per-round ratios
with its spread (the lowest and highest per-round ratio). Peak resident memory (VmHWM)
is measured apart, each model in its own process. The final line is JSON.

    .venv/bin/python benchmarks/model_step.py [--rounds 7] [--encoders bert-base,roberta-large]
        [--models maf,umt,mt,text-only]
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
    "tiny": ("bert", dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64)),  # a check of the script itself, in seconds
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


MODELS = ("maf", "umt", "mt", "text-only")
NAMES = {"maf": "MAF", "umt": "UMT", "mt": "MT", "text-only": "BERT-CRF"}


def model_config(encoder: str, model: str):
    """The paper's MAF, its text-only config, or UMT / MT as their released code sets them, at this encoder's size."""
    from transformers import AutoConfig

    from maf_core.models import default_config

    model_type, sizes = ENCODERS[encoder]
    encoder_config = AutoConfig.for_model(model_type, **sizes).to_dict()
    common = dict(bert_config=encoder_config, vocab_size=sizes["vocab_size"], tags=TAGS, scheme="bioes", dropout=0.1)
    # maf: the paper preset (models.default_config); text-only: MAF's config with text_only
    return default_config(model.replace("text-only", "maf"), **common).with_ablation(text_only=model == "text-only")


def stepper(encoder: str, model_name: str, args):
    """A function that runs one optimisation step of this model on a fixed batch (built and warmed up here)."""
    import torch

    from maf_core.models import build_model

    config = model_config(encoder, model_name)
    torch.manual_seed(0)
    model = build_model(config).train()
    batch = make_batch(args.batch_size, args.pieces, args.words, config.image_dim, config.vocab_size, len(TAGS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        start = time.perf_counter()
        out = model(**batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - start

    step()  # warm-up: allocations, AdamW state
    return step


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def interleaved(encoder: str, models: list[str], args) -> dict:
    """Step times of every model in rounds, in this process: medians, and ratios to BERT-CRF per round."""
    steps = {model: stepper(encoder, model, args) for model in models}
    times: dict[str, list[float]] = {model: [] for model in models}
    for _ in range(args.rounds):
        for model in models:
            times[model].append(steps[model]())
    result = {"encoder": encoder, "s_per_step": {NAMES[m]: round(median(t), 3) for m, t in times.items()},
              "times": {NAMES[m]: [round(x, 3) for x in t] for m, t in times.items()}}
    if "text-only" in models:
        ratios = {}
        for model in models:
            if model == "text-only":
                continue
            per_round = [a / b for a, b in zip(times[model], times["text-only"])]
            ratios[f"{NAMES[model]}/BERT-CRF"] = {"median": round(median(per_round), 3),
                                                  "low": round(min(per_round), 3), "high": round(max(per_round), 3)}
        if "maf" in models and "umt" in models:
            per_round = [a / b for a, b in zip(times["maf"], times["umt"])]
            ratios["MAF/UMT"] = {"median": round(median(per_round), 3), "low": round(min(per_round), 3),
                                 "high": round(max(per_round), 3)}
        result["ratios"] = ratios
    return result


def peak_memory(encoder: str, model: str, args) -> dict:
    """Peak resident memory of one model's warm-up and one step, in this process: VmHWM, the
    high-water mark of this process's own memory map. (ru_maxrss would not do: a child started
    by fork and exec keeps the parent's peak at the fork, here the four models of the timing.)"""
    step = stepper(encoder, model, args)
    step()
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    return {"encoder": encoder, "model": NAMES[model], "peak_rss_mib": round(peak_kib / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", default="bert-base,roberta-large",
                        help=f"comma-separated, of {', '.join(ENCODERS)}")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7, help="timed steps of each model, interleaved")
    parser.add_argument("--no-memory", action="store_true", help="step times only")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # ENCODER:MODEL peak memory, in a child
    args = parser.parse_args()
    models = args.models.split(",")
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (expected some of {', '.join(MODELS)})")
    if args.one:
        encoder, model = args.one.split(":")
        print(json.dumps(peak_memory(encoder, model, args)))
        return

    import subprocess

    import torch

    timed, memory = [], []
    for encoder in args.encoders.split(","):
        timed.append(interleaved(encoder, models, args))
        print(f"{encoder}: {timed[-1]['s_per_step']} s/step; {timed[-1].get('ratios', {})}", file=sys.stderr)
        for model in [] if args.no_memory else models:
            done = subprocess.run([sys.executable, __file__, "--one", f"{encoder}:{model}", "--batch-size",
                                   str(args.batch_size), "--pieces", str(args.pieces), "--words", str(args.words)],
                                  capture_output=True, text=True, check=True)
            memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{encoder:<18} {memory[-1]['model']:<9} {memory[-1]['peak_rss_mib']:6d} MiB peak", file=sys.stderr)
    print(json.dumps({
        "benchmark": "model_step", "batch_size": args.batch_size, "pieces": args.pieces, "words": args.words,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "rounds": args.rounds, "timed": timed,
        "memory": memory,
    }))


if __name__ == "__main__":
    main()
