"""Seconds per epoch on a GPU at Twitter-2015 size: `maf train`'s own loop, BERT-base size, bf16.

The paper reports 86.8 s per epoch on a 2080 Ti (4,000 training tweets); the goal here is
under 5 s on an H100. Steps, all on the GPU machine, none downloaded:

1. a synthetic corpus with TRAIN training tweets (the sample corpus generator; 60/20/20
   splits, so 4,000 train, 1,333 dev, 1,334 test), a WordPiece vocabulary, tokenized text;
2. image features: ResNet-152 (random init + AdaBN) through `extract_images` on the GPU,
   bf16 + channels_last, timed (images/s);
3. `maf_core.train.train` for EPOCHS epochs, batch 64, bf16 autocast: per-epoch training
   seconds and dev-evaluation seconds from metrics.jsonl (epoch 1 includes CUDA warm-up);
4. one epoch of the original design on the same GPU: every tweet padded to 128 pieces and
   ResNet-152 run on the decoded images inside every step (OnlineFeatures);
5. with --umt-epochs N: UMT-BERT-CRF (`maf train --model umt`) on the same text and store,
   same batch size and precision as MAF (its own optimizer, BertAdam), N epochs: seconds per
   epoch (the paper's Table 3: 102.0 s for UMT against 86.8 s for MAF on a 2080 Ti).

    python3 benchmarks/gpu_epoch.py [--train 4000] [--epochs 3] [--umt-epochs 2] [--dir /tmp/maf-gpu-epoch]

The final line is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=4000, help="training tweets (the corpus is 60%% train)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bert", default="base", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet152", help="resnet18 for a quick check of the script")
    parser.add_argument("--original-steps", type=int, default=0,
                        help="time only this many steps of the original design and scale to an epoch (0: whole epoch)")
    parser.add_argument("--umt-epochs", type=int, default=0, help="then UMT-BERT-CRF for this many epochs (0: not)")
    parser.add_argument("--profile", default=None, help="write a torch.profiler table of 20 training steps here")
    parser.add_argument("--dir", default="/tmp/maf-gpu-epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    import numpy as np
    import torch

    from maf_core.config import MAFConfig, TrainConfig
    from maf_core.data import bucketed_batches, collate, load_split
    from maf_core.inference import to_device
    from maf_core.model import MAF
    from maf_core.models import default_config, train_config
    from maf_core.online import OnlineFeatures
    from maf_core.optim import optimizer_for
    from maf_core.train import train, train_step
    from pipeline.backbone import BACKBONES
    from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
    from pipeline.sample import make_sample
    from pipeline.store import FeatureStore
    from pipeline.tokenization import read_meta, tokenize_corpus
    from pipeline.vocab import build_vocab

    root = Path(args.dir)
    data, text, store, run = root / "data", root / "text", root / "store.h5", root / "run"
    started = time.perf_counter()
    if not (data / "train.txt").is_file():
        make_sample(data, tweets=round(args.train / 0.6), seed=0)
        build_vocab(data, root / "tok", vocab_size=8000)
        tokenize_corpus(data, str(root / "tok"), text)
    corpus_s = time.perf_counter() - started
    ids = ids_from_corpus(data)

    device = torch.device(args.device)
    extract_s = None
    if not store.is_file():
        started = time.perf_counter()
        summary = extract_images(data / "images", store, ExtractConfig(
            backbone=args.backbone, weights="none", bn_stats="dataset", bn_samples=256, device=args.device,
            precision="bf16" if device.type == "cuda" else "fp32", channels_last=device.type == "cuda",
            batch_size=128, shard_size=1024), ids=ids)
        extract_s = time.perf_counter() - started
        logging.info("extraction: %s", summary)

    meta = read_meta(text)
    model_config = MAFConfig.from_preset("paper", bert_size=args.bert)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=1)
    if run.exists():
        import shutil

        shutil.rmtree(run)
    train(FeatureStore(store), text, run, model_config, config)
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

    # the original design on the same device: pad to 128, ResNet-152 on every step
    split = load_split(text, "train")
    online = OnlineFeatures(data / "images", ExtractConfig(backbone=args.backbone, weights="none"), device=args.device)
    model = MAF(MAFConfig.from_preset("paper", bert_size=args.bert, tags=meta["tags"],
                                      vocab_size=meta["tokenizer"]["vocab_size"],
                                      image_dim=BACKBONES[args.backbone])).to(device).train()
    optimizer = optimizer_for(model, TrainConfig())
    batches = bucketed_batches([len(x) for x in split.input_ids], args.batch_size, shuffle=True, seed=0)
    timed = batches if args.original_steps <= 0 else batches[: args.original_steps + 2]

    def step(n, indices):
        batch = collate(split, indices, online)
        pad = 128 - batch["input_ids"].shape[1]
        batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, pad))
        batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, pad))
        train_step(model, optimizer, to_device(batch, device), device, generator=torch.Generator().manual_seed(n))

    warm = min(2, len(timed) - 1)
    for n, indices in enumerate(timed[:warm]):  # warm-up (cuDNN autotuning of the ResNet shapes)
        step(n, indices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for n, indices in enumerate(timed[warm:]):
        step(n, indices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    original_s = (time.perf_counter() - started) * len(batches) / (len(timed) - warm)

    gpu_busy = None
    if args.profile and device.type == "cuda":  # is a step bound by the GPU or by the host?
        from torch.profiler import ProfilerActivity, profile

        store_ = FeatureStore(store)
        model = MAF(MAFConfig.from_preset("paper", bert_size=args.bert, tags=meta["tags"],
                                          vocab_size=meta["tokenizer"]["vocab_size"],
                                          image_dim=BACKBONES[args.backbone])).to(device).train()
        optimizer = optimizer_for(model, TrainConfig())
        chosen = batches[:24]

        def trainer_step(n, indices):
            train_step(model, optimizer, to_device(collate(split, indices, store_), device), device,
                       generator=torch.Generator().manual_seed(n))

        for n, indices in enumerate(chosen[:4]):
            trainer_step(n, indices)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            for n, indices in enumerate(chosen[4:]):
                trainer_step(n, indices)
            torch.cuda.synchronize()
            wall = time.perf_counter() - started
        events = prof.key_averages()
        kernel_us = sum(e.self_device_time_total for e in events)
        gpu_busy = kernel_us / 1e6 / wall
        Path(args.profile).write_text(
            f"wall {wall:.3f} s for {len(chosen) - 4} steps, kernels {kernel_us / 1e6:.3f} s\n"
            + events.table(sort_by="self_device_time_total", row_limit=25)
            + "\n"
            + events.table(sort_by="self_cpu_time_total", row_limit=25)
        )

    umt = {}
    if args.umt_epochs > 0:  # UMT on the same text and store, same batch and precision
        umt_run = root / "run-umt"
        if umt_run.exists():
            import shutil

            shutil.rmtree(umt_run)
        train(FeatureStore(store), text, umt_run, default_config("umt", bert_size=args.bert),
              train_config("umt", "paper", epochs=args.umt_epochs, batch_size=args.batch_size,
                           device=args.device, seed=1, amp=device.type == "cuda"))  # bf16 as MAF
        lines = [json.loads(line) for line in (umt_run / "metrics.jsonl").read_text().splitlines()]
        umt_steady = lines[1:] or lines
        umt = {"umt_epoch_train_s": [e["train_seconds"] for e in lines],
               "umt_steady_epoch_train_s": round(float(np.mean([e["train_seconds"] for e in umt_steady])), 2),
               "umt_dev_f1_last": lines[-1]["dev_f1"]}

    steady = epochs[1:] or epochs
    train_s = float(np.mean([e["train_seconds"] for e in steady]))
    if umt:
        umt["maf_over_umt_epoch"] = round(train_s / umt["umt_steady_epoch_train_s"], 3)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(json.dumps({
        "benchmark": "gpu_epoch", "device": gpu, "torch": torch.__version__, "bert": args.bert,
        "train_tweets": len(split), "dev_tweets": len(load_split(text, "valid")),
        "batch_size": args.batch_size, "steps_per_epoch": len(batches), "images": len(ids),
        "corpus_s": round(corpus_s, 1), "extract_s": round(extract_s, 1) if extract_s else None,
        "extract_images_per_s": round(len(ids) / extract_s, 1) if extract_s else None,
        "epoch_train_s": [e["train_seconds"] for e in epochs], "epoch_eval_s": [e["eval_seconds"] for e in epochs],
        "steady_epoch_train_s": round(train_s, 2),
        "steady_epoch_with_dev_eval_s": round(float(np.mean([e["seconds"] for e in steady])), 2),
        "original_design_epoch_s": round(original_s, 2), "original_steps_timed": len(timed) - warm,
        "speedup_vs_original": round(original_s / train_s, 2),
        "peak_gpu_mem_gib": round(peak_gib, 2) if peak_gib else None,
        "dev_f1_last": epochs[-1]["dev_f1"], "gpu_busy_fraction_profiled": round(gpu_busy, 3) if gpu_busy else None,
        **umt,
    }))


if __name__ == "__main__":
    main()
