"""`maf train`: fit MAF on tokenized text + a feature store; evaluate every epoch; resumable.

What a run directory holds, and every check of data against it: maf_core/run.py.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from maf_core import distributed
from maf_core.board import Board
from maf_core.config import BATCHINGS, OPTIMIZERS, MAFConfig
from maf_core.data import Split, bucketed_batches, check_store, collate, load_split
from maf_core.encoder import describe as describe_encoder
from maf_core.matching import choose_negatives
from maf_core.metrics import score, table
from maf_core.model import MAF, MAFOutput
from maf_core.run import RunDirectory, check_vocabulary
from pipeline.conll import ENTITY_TYPES, Tweet, write_conll
from pipeline.errors import DataError
from pipeline.files import atomic_output, output_lock
from pipeline.fingerprint import store_differences
from pipeline.progress import Progress as PipelineProgress
from pipeline.schemes import bioes_to_bio, get_entities
from pipeline.store import FeatureStore
from pipeline.tokenization import read_meta

logger = logging.getLogger(__name__)

FEATURE_KEYS = ("regions", "pooled", "image_ok")
MODEL_KEYS = ("input_ids", "attention_mask", "word_starts", "word_mask", *FEATURE_KEYS)
DISPLAY_ONLY = ("log_every", "tensorboard")  # TrainConfig fields a resumed run may change


@dataclass
class TrainConfig:
    epochs: int = 24
    batch_size: int = 64
    eval_batch_size: int = 64
    lr: float = 5e-5
    head_lr: float | None = None  # learning rate of everything but BERT (CA, CI, CM, CF, emissions, CRF); None = lr
    weight_decay: float = 0.01
    warmup: float = 0.1          # fraction of all steps, linear warm-up, then linear decay to 0
    clip: float = 1.0            # gradient norm: global (adamw), or of each tensor (bertadam)
    seed: int = 1
    device: str = "auto"
    amp: bool | None = None      # bf16 autocast; None = on for CUDA, off for CPU
    # adamw: AdamW with linear_schedule; bertadam: the released code's optimizer and schedule
    # (maf_core/optim.py)
    optimizer: str = "adamw"
    # length: batches of tweets of similar length, rows in random order inside (less padding);
    # random: random batches (the released code's RandomSampler)
    batching: str = "length"
    log_every: float = 30.0      # seconds between progress lines where stderr is not a terminal
    tensorboard: bool = True     # TensorBoard event files in RUN/tb/ (maf_core/board.py)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.batching not in BATCHINGS:
            raise DataError(f"batching {self.batching!r}: expected one of {', '.join(BATCHINGS)}")

    @classmethod
    def for_preset(cls, name: str, **values) -> "TrainConfig":
        """The preset's optimizer and batching (released-code: BertAdam, random batches); `values` win."""
        preset = {"optimizer": "bertadam", "batching": "random"} if name == "released-code" else {}
        return cls(**{**preset, **{k: v for k, v in values.items() if v is not None}})


def autocast(device: torch.device, amp: bool | None):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" if amp is None else amp)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is visible here")
    return torch.device(name)


def optimizer_for(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or BertAdam; no weight decay on biases and LayerNorm weights; `head_lr` for the parts after BERT."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = name.endswith("bias") or "norm" in name.lower()
        head = not name.startswith("bert.")
        groups.setdefault((head, no_decay), []).append(param)
    head_lr = config.lr if config.head_lr is None else config.head_lr
    param_groups = [{"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
                     "lr": head_lr if head else config.lr,
                     "name": ("heads" if head else "bert") + ("_no_decay" if no_decay else "")}
                    for (head, no_decay), params in sorted(groups.items())]
    if config.optimizer == "bertadam":
        from maf_core.optim import BertAdam

        return BertAdam(param_groups, lr=config.lr, max_grad_norm=config.clip)
    cuda = all(p.is_cuda for params in groups.values() for p in params)
    return torch.optim.AdamW(param_groups, lr=config.lr,
                             fused=True if cuda else None)  # one kernel for all parameters on a GPU


def linear_schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the learning rate at step s: up to 1 over the warm-up, then down to exactly 0."""
    warm = max(1, math.ceil(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step - 1) / max(1, total - warm))
    return factor


def schedule_for(config: TrainConfig, tweets: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear_schedule, or BertAdam's warmup_linear over
    the released code's step count."""
    if config.optimizer == "bertadam":
        from maf_core.optim import released_schedule, released_total_steps

        return released_schedule(released_total_steps(tweets, config.batch_size, config.epochs), config.warmup)
    return linear_schedule(steps_per_epoch * config.epochs, config.warmup)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
               amp: bool | None = None, clip: float = 1.0, **forward) -> MAFOutput:
    """One optimisation step on a collated batch already on `device`: forward (bf16 autocast
    where on), backward, global gradient clipping, optimizer step. `forward`: generator,
    negatives, shard. `model` may be MAF or MAF wrapped in DistributedDataParallel."""
    with autocast(device, amp):
        out = model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, tags=batch["tags"], **forward)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if not getattr(optimizer, "clips_each_tensor", False):
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return out


def _to(batch: dict, device: torch.device) -> dict:
    """The batch on `device`; on CUDA through pinned memory, so the copies overlap the compute."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_split(
    model: MAF,
    split: Split,
    store: FeatureStore | None,
    tags: list[str],
    scheme: str,
    batch_size: int,
    device: torch.device,
    amp: bool | None = None,
    progress_every: float = 30.0,
) -> tuple[list[list[str]], list[float]]:
    """BIO tags per word (words cut by truncation get O) and p per tweet, in split order.

    In a distributed run each process predicts every world-th tweet and all get the merged
    result: every tweet is predicted exactly once, none padded in or dropped.
    """
    model.eval()
    rank, world = distributed.rank_and_world()
    mine = list(range(rank, len(split), world))
    lengths = [len(split.input_ids[i]) for i in mine]
    done: dict[int, tuple[list[str], float]] = {}
    batches = bucketed_batches(lengths, batch_size, shuffle=False, seed=0)
    bar = PipelineProgress(len(batches), f"predict {split.name}", "batches", every=progress_every, log=logger,
                           enabled=rank == 0, leave=False, final=False)
    for batch_rows in batches:
        indices = [mine[r] for r in batch_rows]
        batch = _to(collate(split, indices, store), device)
        with autocast(device, amp):
            out = model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, decode=True)
        probs = out.match_prob.float().cpu().tolist()
        for row, i in enumerate(indices):
            words = [tags[t] for t in out.tags[row]]
            words += ["O"] * (len(split.words[i]) - len(words))
            done[i] = (bioes_to_bio(words) if scheme == "bioes" else words, probs[row])
        bar.update(1)
    bar.close()
    if world > 1:
        merged: dict[int, tuple[list[str], float]] = {}
        for part in distributed.all_gather_objects(done):
            merged.update(part)
        done = merged
    if sorted(done) != list(range(len(split))):
        raise RuntimeError(f"{split.name}: predicted {len(done)} of {len(split)} tweets")
    return [done[i][0] for i in range(len(split))], [done[i][1] for i in range(len(split))]


def evaluate_split(model, split, store, tags, scheme, batch_size, device,
                   progress_every: float = 30.0) -> tuple[dict, list, list]:
    predicted, probs = predict_split(model, split, store, tags, scheme, batch_size, device,
                                     progress_every=progress_every)
    return score(split.labels, predicted), predicted, probs


def write_predictions(out_dir: Path, split: Split, predicted: list[list[str]], probs: list[float]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tweets = [Tweet(split.image_ids[i], split.words[i], predicted[i], 0) for i in range(len(split))]
    with atomic_output(out_dir / f"{split.name}.conll") as handle:
        write_conll(tweets, handle)
    with atomic_output(out_dir / f"{split.name}.jsonl") as handle:
        for i in range(len(split)):
            entities = [{"type": t, "start": s, "end": e, "words": split.words[i][s:e]}
                        for t, s, e in get_entities(predicted[i])]
            handle.write(json.dumps({"id": split.image_ids[i], "words": split.words[i], "gold": split.labels[i],
                                     "predicted": predicted[i], "entities": entities, "match_prob": probs[i]},
                                    ensure_ascii=False) + "\n")


def _rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])


@dataclass
class Inputs:
    """What a run reads: the text's meta.json and splits, the store, and the record config.json keeps of them."""

    meta: dict
    store: FeatureStore
    splits: dict[str, Split]
    record: dict  # text_dir, features, tokenizer, max_length, store_fingerprint, train


@dataclass
class Progress:
    """Where training stands: the next epoch, the best dev F1 so far and its epoch, the step count."""

    epoch: int = 1
    best_f1: float = -1.0
    best_epoch: int = 0
    step: int = 0


def train(features, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
          config: TrainConfig, resume: bool = False, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train, evaluate on dev every epoch, keep the best, test it; returns the report.

    `features`: a store.h5 path, or `maf_core.online.OnlineFeatures` (the backbone in every step).
    The caller's `model_config` is not changed: the run's own is fitted to the text and store.
    One writer per run directory: a second `maf train` on the same --out is refused at once.
    """
    from contextlib import nullcontext

    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, the first process holds the lock
    with output_lock(out_dir) if lead else nullcontext():
        return _train_locked(features, text_dir, out_dir, model_config, config, resume, on_epoch_end)


def _train_locked(features, text_dir, out_dir, model_config: MAFConfig, config: TrainConfig, resume: bool,
                  on_epoch_end: Callable[[int], None] | None) -> dict:
    run = RunDirectory(out_dir)
    inputs = read_inputs(features, text_dir, model_config, config)
    model_config = fit_to_inputs(model_config, inputs)
    state = None
    if resume:
        state, model_config = _check_resume(run, inputs.record)
    elif not run.is_empty():
        raise DataError(f"{run.path}: exists and is not empty; pass --resume to continue that run, or another --out")

    device = distributed.setup(config.device) if distributed.launched() else resolve_device(config.device)
    rank, world = distributed.rank_and_world()
    # the encoder is built (and refused, for heads that do not fit, say) before anything is written
    model, trained = build_model(model_config, config.seed, device, rank, world)
    distributed.barrier()  # every process has checked the run directory before the first one writes to it
    if rank == 0:          # the one process that writes files
        run.start(model_config, inputs.record, inputs.store.bn_stats())
        if state is None:  # --bert's own tokenizer when given: its vocabulary was checked against the text's
            run.save_tokenizer(model_config.bert or inputs.meta["tokenizer"]["name_or_path"],
                               inputs.meta["tokenizer"]["vocab_sha256"],
                               [w for words in inputs.splits["train"].words for w in words])
    optimizer = optimizer_for(model, config)
    train_split = inputs.splits["train"]
    steps_per_epoch = len(epoch_batches(train_split, config, 1, world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_for(config, len(train_split), steps_per_epoch))
    progress = Progress()
    if state is not None:
        progress = _restore(state, model, optimizer, scheduler, run.path, rank, world)
    if rank == 0:
        logger.info("%s", run_summary(model, inputs, config, device, world, steps_per_epoch, run.path))
        if model.config.bert is None:
            logger.warning("the text encoder is %s (no --bert): fine for tests and the offline demo, meaningless "
                           "for real data; pass --bert bert-base-cased or a local encoder directory",
                           describe_encoder(model.config))
    writes_board = rank == 0 and config.tensorboard
    board = Board(run.file("tb") if writes_board else None, progress.step, loss_parts(model.config),
                  dev_annotations(inputs.meta) if writes_board else None)

    for epoch in range(progress.epoch, config.epochs + 1):
        started = time.perf_counter()
        losses = train_one_epoch(trained, model, optimizer, scheduler, inputs, config, epoch, progress, device,
                                 board)
        train_seconds = time.perf_counter() - started
        dev_split = inputs.splits["valid"]
        dev, _, dev_probs = evaluate_split(model, dev_split, inputs.store, model.config.tags, model.config.scheme,
                                           config.eval_batch_size, device, progress_every=config.log_every)
        board.epoch(epoch, dev, dev_split.image_ids, dev_probs, model.matching is not None)
        seconds = time.perf_counter() - started
        improved = dev["overall"]["f1"] > progress.best_f1
        if improved:
            progress.best_f1, progress.best_epoch = dev["overall"]["f1"], epoch
            if rank == 0:
                run.save_best(model)
        logger.info("epoch %d/%d  loss %.3f (ner %.3f ca %.3f cm %.3f)  dev F1 %.2f%s  %.0f s", epoch, config.epochs,
                    losses["loss"], losses["ner"], losses["ca"], losses["cm"], dev["overall"]["f1"],
                    " (best)" if improved else "", seconds)
        line = metrics_line(epoch, losses, dev, scheduler.get_last_lr()[0], seconds, train_seconds)
        end_epoch(run, line, model, optimizer, scheduler, epoch, progress, rank)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    board.close()
    return finish(run, inputs.splits, inputs.store, device, config.eval_batch_size, progress.best_epoch)


def build_model(model_config: MAFConfig, seed: int, device: torch.device, rank: int,
                world: int) -> tuple[MAF, torch.nn.Module]:
    """The seeded model, and what trains it: the model itself, or DDP around it on several processes."""
    random.seed(seed)
    torch.manual_seed(seed)
    model = MAF(model_config).to(device)
    torch.manual_seed(seed + 7919 * rank)  # each process its own dropout masks
    if world == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    # BERT's pooler feeds only CA: without CA (text-only, w/o CA) its parameters get no gradient
    idle_pooler = model.config.pooling == "pooler" and model.alignment is None
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=idle_pooler)


def loss_parts(config: MAFConfig) -> tuple[str, ...]:
    """The loss parts this model has: total and ner always, ca and cm where CA and CM exist."""
    return ("total", "ner", *(["ca"] if config.visual and config.use_alignment else []),
            *(["cm"] if config.visual and config.use_matching else []))


def dev_annotations(meta: dict) -> dict[str, dict]:
    """Which images match their tweet (the corpus's annotations.jsonl), so that p's histograms
    can be drawn per relation."""
    from maf_core.report import corpus_annotations, read_annotations

    path = corpus_annotations(meta)
    try:
        return read_annotations(path)
    except (ValueError, KeyError, TypeError, OSError) as err:  # only the histograms need it
        logger.warning("%s: unreadable (%s); p's histograms are drawn for all tweets", path, err)
        return {}


def run_summary(model: MAF, inputs: Inputs, config: TrainConfig, device: torch.device, world: int,
                steps_per_epoch: int, out_dir: Path) -> str:
    """What is about to run, before the first step: parameters by part, the data, the device, the run directory."""
    from maf_core.model import count_parameters
    from pipeline.images import STATUS

    counts = count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    parts = ", ".join(f"{name} {n / 1e6:.2f}M" for name, n in counts.items() if n and name != "total")
    lines = [f"{'text-only BERT-CRF' if model.config.text_only else 'MAF'} on {describe_encoder(model.config)}: "
             f"{counts['total'] / 1e6:.2f}M trainable parameters ({parts})",
             f"frozen: {f'{frozen / 1e6:.2f}M' if frozen else 'none'} in the model; the image backbone is not "
             "in it (its features come from the store)"]
    store = inputs.store
    for name, split in inputs.splits.items():
        if hasattr(store, "status"):
            ok = sum(int(store.status[store.rows[i]]) == STATUS["ok"] for i in split.image_ids)
            lines.append(f"{name}: {len(split)} tweets, {ok} with a readable image, {len(split) - ok} without")
        else:
            lines.append(f"{name}: {len(split)} tweets (images read in every step)")
    amp = device.type == "cuda" if config.amp is None else config.amp
    lines.append(f"device {device}{f' x {world} processes' if world > 1 else ''}, "
                 f"{'bf16 autocast' if amp else 'fp32'}; global batch {config.batch_size}, {steps_per_epoch} steps "
                 f"per epoch x {config.epochs} epochs, {config.optimizer}, {config.batching} batches")
    lines.append(f"writing to {out_dir.resolve()}" + (f" (TensorBoard: {out_dir.resolve() / 'tb'})"
                                                       if config.tensorboard else ""))
    return "\n  ".join(["starting a run:", *lines])


def read_inputs(features, text_dir: str | Path, model_config: MAFConfig, config: TrainConfig) -> Inputs:
    """The tokenized text and the store, checked against each other and against the model's
    scheme and vocabulary (DataError naming what differs)."""
    text_dir = Path(text_dir)
    meta = read_meta(text_dir)
    store = features if hasattr(features, "gather") else FeatureStore(features)  # a store, or OnlineFeatures
    features = getattr(features, "path", features)
    if model_config.scheme != meta["scheme"]:
        raise DataError(f"{text_dir}: tokenized with tag scheme {meta['scheme']!r}, but the model expects "
                        f"{model_config.scheme!r}; run `maf-pipe tokenize --scheme {model_config.scheme}` "
                        "or pick the matching preset")
    if model_config.bert is not None:  # the BERT's own vocabulary must be the one the text was cut with
        from pipeline.tokenization import load_tokenizer, vocab_sha256

        found = {"name_or_path": model_config.bert, "vocab_sha256": vocab_sha256(load_tokenizer(model_config.bert))}
        check_vocabulary(meta["tokenizer"], found, str(text_dir), f"--bert {model_config.bert}",
                         f"tokenize again with --tokenizer {model_config.bert}")
    record = {"text_dir": str(text_dir.resolve()), "features": str(Path(features).resolve()),
              "tokenizer": meta["tokenizer"],
              "max_length": int(meta["max_length"]), "store_fingerprint": store.fingerprint, "train": asdict(config)}
    splits = {name: load_split(text_dir, name) for name in ("train", "valid", "test") if name in meta["splits"]}
    if "train" not in splits or "valid" not in splits:
        raise DataError(f"{text_dir}: needs train and valid splits, found {sorted(splits)}")
    for split in splits.values():
        check_store(split, store, text_dir)
    return Inputs(meta, store, splits, record)


def fit_to_inputs(model_config: MAFConfig, inputs: Inputs) -> MAFConfig:
    """A copy of the model config with the text's tags, vocabulary and length and the store's sizes."""
    meta, store = inputs.meta, inputs.store
    return replace(model_config, tags=list(meta["tags"]), vocab_size=int(meta["tokenizer"]["vocab_size"]),
                   pad_token_id=int(meta["tokenizer"].get("pad_id") or 0),
                   image_dim=int(store.channels), num_regions=int(store.num_regions),
                   max_length=max(model_config.max_length, int(meta["max_length"])))


def _restore(state: dict, model, optimizer, scheduler, out_dir: Path, rank: int, world: int) -> Progress:
    """Model, optimizer, schedule and RNG as last.pt left them; the progress to continue from."""
    from maf_core.checkpoint import load_state_into

    load_state_into(model, state["model"], out_dir / RunDirectory.LAST)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) != world:
        raise DataError(f"{out_dir}: was trained on {len(rngs)} processes; resume it on the same number, not {world}")
    _set_rng_state(rngs[rank])
    logger.info("resuming %s after epoch %d (best dev F1 %.2f at epoch %d)", out_dir, state["epoch"],
                state["best_f1"], state["best_epoch"])
    return Progress(state["epoch"] + 1, state["best_f1"], state["best_epoch"], state["step"])


def epoch_batches(split: Split, config: TrainConfig, epoch: int, world: int = 1) -> list[list[int]]:
    """The global batches of one epoch, seeded by the run's seed and the epoch."""
    lengths = split.padded()["lengths"].tolist()
    batches = bucketed_batches(lengths, config.batch_size, shuffle=True, seed=config.seed * 100003 + epoch,
                               by_length=config.batching == "length")
    return [b for b in batches if len(b) >= world]  # a last batch smaller than the processes is left out


def shard_batch(split: Split, indices: list[int], store, rank: int, world: int) -> dict:
    """This process's rows of a global batch, padded to the global batch's longest."""
    padded = split.padded()
    rows = np.asarray(indices)
    shard = distributed.BatchShard(rank, distributed.split_sizes(len(indices), world)) if world > 1 else None
    mine = indices[shard.rows] if shard is not None else indices
    batch = collate(split, mine, store, length=int(padded["lengths"][rows].max()),
                    words=max(1, int(padded["words"][rows].max())))
    batch["shard"] = shard
    return batch


def train_one_epoch(trained, model: MAF, optimizer, scheduler, inputs: Inputs, config: TrainConfig, epoch: int,
                    progress: Progress, device: torch.device, board: Board | None = None) -> dict[str, float]:
    """One pass over the training split (progress.step advances); the mean of each loss part.
    A bar (or log lines) shows the steps; `board` gets every step's losses and learning rates."""
    rank, world = distributed.rank_and_world()
    split = inputs.splits["train"]
    batches = epoch_batches(split, config, epoch, world)
    matching = model.config.visual and model.config.use_matching
    trained.train()
    sums = torch.zeros(4, device=device)  # loss, ner, ca, cm: summed on the device, read once per epoch
    per_step, lrs, first_step = [], [], progress.step  # for TensorBoard, read once per epoch
    groups = [group.get("name", str(n)) for n, group in enumerate(optimizer.param_groups)]
    bar = PipelineProgress(len(batches), f"epoch {epoch}/{config.epochs}", "steps", every=config.log_every,
                           log=logger, enabled=rank == 0, leave=False, final=False)
    def running_loss() -> dict[str, float]:  # read only when the bar shows it: one device sync
        return {"loss": sums[0].item() / max(1, progress.step - first_step)}

    prepared = (shard_batch(split, indices, inputs.store, rank, world) for indices in batches)
    for batch in _prefetched(prepared, device):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + progress.step)
        shard = batch.pop("shard")
        negatives = None
        if matching and shard is None:  # drawn here from the CPU copy of image_ok: no device sync
            negatives = choose_negatives(batch["image_ok_cpu"], model.pairs_for(len(batch["image_ok_cpu"])),
                                         model.config.negatives, generator)
        lrs.append([group["lr"] for group in optimizer.param_groups])
        out = train_step(trained, optimizer, batch, device, config.amp, config.clip, generator=generator,
                         negatives=negatives, shard=shard)
        scheduler.step()
        progress.step += 1
        step_losses = torch.stack([v.detach().float() if v is not None else sums.new_zeros(())
                                   for v in (out.loss, out.loss_ner, out.loss_ca, out.loss_cm)])
        sums += step_losses
        if board is not None and board.writer is not None:
            per_step.append(step_losses)
        bar.update(1, running_loss)
    bar.close()
    if per_step:
        board.steps(first_step, torch.stack(per_step), lrs, groups)
    sums = distributed.mean_over_processes(sums)
    return dict(zip(("loss", "ner", "ca", "cm"), (sums / len(batches)).tolist()))


def metrics_line(epoch: int, losses: dict, dev: dict, lr: float, seconds: float, train_seconds: float) -> dict:
    """One line of metrics.jsonl."""
    overall = dev["overall"]
    return {"epoch": epoch, **{f"loss_{k}" if k != "loss" else k: round(v, 5) for k, v in losses.items()},
            "dev_precision": round(overall["precision"], 4), "dev_recall": round(overall["recall"], 4),
            "dev_f1": round(overall["f1"], 4), "lr": lr, "seconds": round(seconds, 2),
            "train_seconds": round(train_seconds, 2), "eval_seconds": round(seconds - train_seconds, 2)}


def end_epoch(run: RunDirectory, line: dict, model: MAF, optimizer, scheduler, epoch: int, progress: Progress,
              rank: int) -> None:
    """metrics.jsonl gets the line and last.pt the whole state (the first process), then every
    process waits until they are written."""
    rngs = distributed.all_gather_objects(_rng_state())
    if rank == 0:
        run.append_metrics(line)
        run.save_last({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "epoch": epoch, "best_f1": progress.best_f1,
                       "best_epoch": progress.best_epoch, "step": progress.step, "rng": rngs})
    distributed.barrier()


def _prefetched(batches: Iterator[dict], device: torch.device) -> Iterator[dict]:
    """Batches moved to `device`. On CUDA the next batch is gathered, pinned and copied in a
    background thread while the current one trains; on CPU that thread would only compete
    with the model for the same cores, so batches are made in turn."""
    def load(batch: dict) -> dict:
        shard, image_ok = batch.pop("shard"), batch.get("image_ok")
        return {**_to(batch, device), "image_ok_cpu": image_ok, "shard": shard}

    if device.type != "cuda":
        yield from map(load, batches)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(load, batch)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def finish(run: RunDirectory, splits: dict[str, Split], store: FeatureStore, device: torch.device,
           batch_size: int, best_epoch: int) -> dict:
    """Evaluate best/ on dev and test; write report.json and predictions/ (the first process)."""
    model = run.load_best(device)
    lead = distributed.rank_and_world()[0] == 0
    report = {"best_epoch": best_epoch, "encoder": describe_encoder(model.config)}
    for name in ("valid", "test"):
        if name not in splits:
            continue
        scores, predicted, probs = evaluate_split(model, splits[name], store, model.config.tags, model.config.scheme,
                                                  batch_size, device)
        report[name] = scores
        if lead:
            write_predictions(run.predictions(), splits[name], predicted, probs)
        logger.debug("%s\n%s", name, table(scores, name))
    if lead:
        run.write_report(report)
    distributed.barrier()
    return report


def train_seeds(features: str | Path, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
                config: TrainConfig, seeds: list[int], resume: bool = False) -> dict:
    """One run per seed under OUT/seed-N, then summary.json: mean and std over seeds of each score."""
    from statistics import mean, pstdev

    out_dir = Path(out_dir)
    reports = {}
    for seed in seeds:
        run = RunDirectory(out_dir / f"seed-{seed}")
        if resume and run.read_report() is not None:
            reports[seed] = run.read_report()
            logger.info("seed %d: already finished in %s", seed, run.path)
            continue
        reports[seed] = train(features, text_dir, run.path, model_config, replace(config, seed=seed),
                              resume=resume and run.last.is_file())
    summary: dict = {"seeds": seeds}
    for split in ("valid", "test"):
        if not all(split in r for r in reports.values()):
            continue
        rows = {"overall": [r[split]["overall"] for r in reports.values()]}
        for name in sorted({t for r in reports.values() for t in r[split]["types"]}):
            rows[name] = [
                r[split]["types"].get(name, {"precision": 0.0, "recall": 0.0, "f1": 0.0}) for r in reports.values()
            ]
        summary[split] = {
            name: {
                metric: {"mean": mean(v[metric] for v in values), "std": pstdev(v[metric] for v in values)}
                for metric in ("precision", "recall", "f1")
            }
            for name, values in rows.items()
        }
    if distributed.rank_and_world()[0] == 0:
        with atomic_output(out_dir / "summary.json") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
    return summary


def summary_table(summary: dict, split: str = "test") -> str:
    """Mean ± std over seeds: F1 per type, overall P, R, F1."""
    scores = summary[split]
    types = [t for t in ENTITY_TYPES if t in scores]
    head = f"{split + ' (' + str(len(summary['seeds'])) + ' seeds)':<16}" + "".join(f"{t:>14}" for t in types) + \
        "".join(f"{m:>14}" for m in ("P", "R", "F1"))
    cells = [scores[t]["f1"] for t in types] + [scores["overall"][m] for m in ("precision", "recall", "f1")]
    return head + "\n" + f"{'':<16}" + "".join(f"{c['mean']:8.2f} ±{c['std']:4.2f}" for c in cells)


def _check_resume(run: RunDirectory, record: dict) -> tuple[dict, MAFConfig]:
    """last.pt and the run's model config, if this text, store and training settings are the run's own."""
    state = run.load_last()
    saved = run.record
    changed = store_differences(record["store_fingerprint"], saved["store_fingerprint"], record["features"])
    if changed:
        raise DataError(f"{record['features']}: its fingerprint differs from the store {run.path} was trained with "
                        f"({saved['features']}: {changed}, 'there' = this store); resume with that store")
    check_vocabulary(record["tokenizer"], saved["tokenizer"], record["text_dir"],
                     f"the run {run.path} (tokenizer {saved['tokenizer']['name_or_path']})",
                     "resume with the text the run was started on")
    started = {**asdict(TrainConfig()), **saved["train"]}  # settings added later: their defaults
    if {k: v for k, v in started.items() if k not in DISPLAY_ONLY} != \
            {k: v for k, v in record["train"].items() if k not in DISPLAY_ONLY}:
        raise DataError(
            f"{run.path}: was started with other training settings {saved['train']}; resume with the same ones"
        )
    return state, run.model_config
