"""Seconds per training step (forward + backward + clipping + AdamW) and peak memory of every model
of the registry (maf_core.models.ARCHITECTURES) and of BERT-CRF (MAF's config with text_only, the
baseline of the ratios), for encoders of BERT-base and RoBERTa-large size.

Random init (same cost as pretrained), batch 16 x 40 word pieces (30 words), 49 x 2048 regions,
BIOES tags over 4 types, on this machine's CPU (or `--device cuda`). The word-level models read the same 30 words as
characters; their vocabularies come from 10,000 made-up training words (the encoder size does
not apply to them). Step times: the models are built once in one process and timed in rounds
(MAF, UMT, ..., BERT-CRF, MAF, UMT, ...), one step each per round, so that the machine's drift
falls on all of them alike; each model's time is its median over rounds, and each ratio against
BERT-CRF is the median of the per-round ratios with its spread (the lowest and highest per-round
ratio). The optimiser is the trainer's (maf_core.optim.optimizer_for with TrainConfig's
defaults). Peak resident memory (VmHWM) is measured apart, each model in its own process. A model
that cannot be built here is reported with its error, and the others still run. The final line
is JSON.

    .venv/bin/python benchmarks/model_step.py [--rounds 7] [--encoders bert-base,roberta-large]
        [--models maf,umt,...,text-only]  (default: every model of the registry, and text-only)
        [--flops]  (count FLOPs by part and parameters instead of timing: where a ratio comes from)
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


WORDS_IN_VOCABULARY = 10_000  # the word-level models' made-up training vocabulary
WORD_CHARS = 12  # characters per word in the batch (the made-up words are shorter)
BASELINE = "text-only"  # BERT-CRF: MAF's config with text_only, the denominator of every ratio


def made_up_word(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    word = ""
    while True:
        word += letters[i % 26]
        i //= 26
        if i == 0:
            return word


def make_batch(batch: int, pieces: int, words: int, image_dim: int, vocab: int, num_tags: int):
    """Every key a model may read: pieces (one per word, then extra ones), the words' characters
    (made-up vocabulary words, as code points), regions, pooled, image_ok, tags."""
    import torch

    g = torch.Generator().manual_seed(0)
    word_starts = torch.arange(1, words + 1).repeat(batch, 1)  # simple: one piece per word, then extra pieces
    word_ids = torch.randint(0, WORDS_IN_VOCABULARY, (batch, words), generator=g)
    word_chars = torch.zeros(batch, words, WORD_CHARS, dtype=torch.long)
    for (row, column), i in zip(torch.cartesian_prod(torch.arange(batch), torch.arange(words)).tolist(),
                                word_ids.flatten().tolist()):
        codes = [ord(c) for c in made_up_word(i)]
        word_chars[row, column, : len(codes)] = torch.tensor(codes)
    return {
        "input_ids": torch.randint(5, vocab, (batch, pieces), generator=g),
        "attention_mask": torch.ones(batch, pieces, dtype=torch.long),
        "word_starts": word_starts,
        "word_mask": torch.ones(batch, words, dtype=torch.bool),
        "word_chars": word_chars,
        "regions": torch.rand(batch, 49, image_dim, generator=g).half(),
        "pooled": torch.rand(batch, image_dim, generator=g),
        "image_ok": torch.ones(batch, dtype=torch.bool),
        "tags": torch.randint(0, num_tags, (batch, words), generator=g),
    }


def all_models() -> tuple[str, ...]:
    """Every model of the registry (new ones included as they land), then the BERT-CRF baseline."""
    from maf_core.models import ARCHITECTURES

    return (*ARCHITECTURES, BASELINE)


def display(model: str) -> str:
    """The name in the results: the registry's title, BERT-CRF for the baseline."""
    from maf_core.models import model_class

    return "BERT-CRF" if model == BASELINE else model_class(model).title


def model_config(encoder: str, model: str):
    """Each model as its source builds it (the registry's default_config; MAF: the paper preset), at
    this encoder's size; BERT-CRF is MAF's config with text_only. A model that reads no word
    pieces keeps its own sizes and gets its vocabularies from made-up training words."""
    from transformers import AutoConfig

    from maf_core.models import default_config, model_class

    name = "maf" if model == BASELINE else model
    cls = model_class(name)
    common = dict(tags=TAGS, scheme="bioes", dropout=0.1)
    if "pieces" in cls.inputs:
        model_type, sizes = ENCODERS[encoder]
        encoder_config = AutoConfig.for_model(model_type, **sizes).to_dict()
        common.update(bert_config=encoder_config, vocab_size=sizes["vocab_size"])
    config = default_config(name, **common)
    if model == BASELINE:
        config = config.with_ablation(text_only=True)
    fit = getattr(cls, "fit_to_text", None)
    if fit is not None:
        words = [made_up_word(i) for i in range(WORDS_IN_VOCABULARY)]
        config = fit(config, [words[i: i + 30] for i in range(0, len(words), 30)])
    return config


def stepper(encoder: str, model_name: str, args):
    """A function that runs one optimisation step of this model on a fixed batch (built and warmed
    up here), as `maf train` does: forward, backward, global clipping, the trainer's AdamW."""
    import inspect

    import torch

    from maf_core.config import TrainConfig
    from maf_core.models import build_model, uses_amp
    from maf_core.optim import optimizer_for

    config = model_config(encoder, model_name)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(config).to(device).train()
    accepted = inspect.signature(model.forward).parameters
    batch = make_batch(args.batch_size, args.pieces, args.words, config.image_dim, config.vocab_size, len(TAGS))
    batch = {key: value.to(device) for key, value in batch.items() if key in accepted}
    optimizer = optimizer_for(model, TrainConfig())
    generator = torch.Generator().manual_seed(0)
    # as `maf train` runs it: bf16 autocast on CUDA where the model's recipe does
    amp = uses_amp(None, config, device.type)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(**batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step()  # warm-up: allocations, AdamW state
    return step


def one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratio(numerator: list[float], denominator: list[float]) -> dict:
    per_round = [a / b for a, b in zip(numerator, denominator)]
    return {"median": round(median(per_round), 3), "low": round(min(per_round), 3), "high": round(max(per_round), 3)}


def interleaved(encoder: str, models: list[str], args) -> dict:
    """Step times of every model in rounds, in this process: medians, and ratios to BERT-CRF per
    round. A model that cannot be built is left out of the rounds, with its error."""
    steps, errors = {}, {}
    for model in models:
        try:
            steps[model] = stepper(encoder, model, args)
        except Exception as error:  # a model this script cannot build: say so, time the others
            errors[display(model)] = one_line(error)
            print(f"{encoder}: {display(model)} not timed: {errors[display(model)]}", file=sys.stderr)
    times: dict[str, list[float]] = {model: [] for model in steps}
    for _ in range(args.rounds):
        for model, step in steps.items():
            times[model].append(step())
    result = {"encoder": encoder, "s_per_step": {display(m): round(median(t), 3) for m, t in times.items()},
              "times": {display(m): [round(x, 3) for x in t] for m, t in times.items()}}
    if errors:
        result["errors"] = errors
    if BASELINE in times:
        result["ratios"] = {f"{display(m)}/BERT-CRF": ratio(t, times[BASELINE])
                            for m, t in times.items() if m != BASELINE}
        if "maf" in times and "umt" in times:
            result["ratios"]["MAF/UMT"] = ratio(times["maf"], times["umt"])
    return result


def peak_memory(encoder: str, model: str, args) -> dict:
    """Peak resident memory of one model's warm-up and one step, in this process: VmHWM, the
    high-water mark of this process's own memory map. (ru_maxrss would not do: a child started
    by fork and exec keeps the parent's peak at the fork, here the models of the timing.)"""
    import torch

    step = stepper(encoder, model, args)
    step()
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    peak = {"encoder": encoder, "model": display(model), "peak_rss_mib": round(peak_kib / 1024)}
    if args.device.startswith("cuda"):  # the GPU's own peak: what the allocator handed out
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return peak


def flop_counts(encoder: str, model_name: str, args) -> dict:
    """Counted, not timed (a count does not depend on the machine's load): the FLOPs of one forward
    and backward on the benchmark's batch (torch.utils.flop_counter: matrix products and
    convolutions, which are nearly all of the work), those of the forward alone by the model's
    top-level parts, and the parameters AdamW updates."""
    import inspect

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from maf_core.models import build_model

    config = model_config(encoder, model_name)
    torch.manual_seed(0)
    model = build_model(config).train()
    accepted = inspect.signature(model.forward).parameters
    batch = make_batch(args.batch_size, args.pieces, args.words, config.image_dim, config.vocab_size, len(TAGS))
    batch = {key: value for key, value in batch.items() if key in accepted}
    forward, both = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with forward:  # by part: the forward's (the counter cannot place a backward product in a module)
        loss = model(**batch, generator=torch.Generator().manual_seed(0)).loss
    with both:
        model(**batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    by_module = forward.get_flop_counts()
    top = type(model).__name__
    parts = {name: sum(by_module.get(f"{top}.{name}", {}).values()) for name, _ in model.named_children()}
    del loss
    return {"model": display(model_name), "gflops": round(both.get_total_flops() / 1e9, 2),
            "forward_gflops": round(forward.get_total_flops() / 1e9, 2),
            "forward_parts_gflops": {name: round(flops / 1e9, 3) for name, flops in parts.items() if flops},
            "parameters_m": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", default="bert-base,roberta-large",
                        help=f"comma-separated, of {', '.join(ENCODERS)}")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated, of the registry's models and {BASELINE} (default: all of them)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7, help="timed steps of each model, interleaved")
    parser.add_argument("--no-memory", action="store_true", help="step times only")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bf16 autocast where the recipe "
                        "trains so; peak GPU memory besides VmHWM)")
    parser.add_argument("--flops", action="store_true", help="count each model's FLOPs (forward and backward, by "
                        "part) and parameters instead of timing it; ratios to BERT-CRF")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # ENCODER:MODEL peak memory, in a child
    args = parser.parse_args()
    known = all_models()
    models = list(known) if args.models is None else args.models.split(",")
    unknown = sorted(set(models) - set(known))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (expected some of {', '.join(known)})")
    if args.one:
        encoder, model = args.one.split(":")
        print(json.dumps(peak_memory(encoder, model, args)))
        return

    if args.flops:
        counted = [flop_counts(encoder, model, args) for encoder in args.encoders.split(",") for model in models]
        for row in counted:
            print(f"{row['model']:<22} {row['gflops']:8.1f} GFLOPs  {row['parameters_m']:7.2f} M parameters  "
                  f"forward by part: {row['forward_parts_gflops']}", file=sys.stderr)
        base = next((row for row in counted if row["model"] == display(BASELINE)), None)
        ratios = {f"{row['model']}/BERT-CRF": {"flops": round(row["gflops"] / base["gflops"], 3),
                                               "parameters": round(row["parameters_m"] / base["parameters_m"], 3)}
                  for row in counted if base is not None and row is not base and row["gflops"]}
        print(json.dumps({"benchmark": "model_flops", "encoders": args.encoders, "batch_size": args.batch_size,
                          "pieces": args.pieces, "words": args.words, "counted": counted, "ratios": ratios}))
        return

    import subprocess

    import torch

    timed, memory = [], []
    for encoder in args.encoders.split(","):
        timed.append(interleaved(encoder, models, args))
        print(f"{encoder}: {timed[-1]['s_per_step']} s/step; {timed[-1].get('ratios', {})}", file=sys.stderr)
        for model in [] if args.no_memory else models:
            if display(model) in timed[-1].get("errors", {}):
                continue
            done = subprocess.run([sys.executable, __file__, "--one", f"{encoder}:{model}", "--batch-size",
                                   str(args.batch_size), "--pieces", str(args.pieces), "--words", str(args.words),
                                   "--device", args.device],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                memory.append({"encoder": encoder, "model": display(model),
                               "error": (done.stderr.strip().splitlines() or ["no output"])[-1]})
                continue
            memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{encoder:<18} {memory[-1]['model']:<22} {memory[-1]['peak_rss_mib']:6d} MiB peak", file=sys.stderr)
    print(json.dumps({
        "benchmark": "model_step", "batch_size": args.batch_size, "pieces": args.pieces, "words": args.words,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None, "rounds": args.rounds,
        "timed": timed,
        "memory": memory,
    }))


if __name__ == "__main__":
    main()
