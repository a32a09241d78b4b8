"""`maf train`'s loop: fit MAF on tokenized text + a feature store, score dev every epoch, keep
the best, test it; resumable.

Around it: what a run reads and the checks on it (inputs.py), the optimizer and schedule
(optim.py), tagging and scoring a split (inference.py), the start-of-run text (run_summary.py),
TensorBoard (board.py), several seeds (seeds.py), the run directory's files (run.py).
"""
from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from maf_core import distributed, models
from maf_core.board import Board
from maf_core.checkpoint import load_state_into
from maf_core.config import MAFConfig, TrainConfig
from maf_core.data import Split, bucketed_batches, collate
from maf_core.encoder import describe as describe_encoder
from maf_core.images_seen import no_image_note, readable_by_split, start_warning
from maf_core.inference import autocast, evaluate_split, resolve_device, to_device, write_predictions
from maf_core.inputs import Inputs, check_resume, fit_to_inputs, read_inputs
from maf_core.matching import choose_negatives
from maf_core.metrics import corpus_annotations, read_annotations, table
from maf_core.models import MODEL_KEYS, MAFOutput
from maf_core.optim import optimizer_for, schedule_for
from maf_core.run import RunDirectory
from maf_core.run_summary import run_summary
from pipeline.errors import DataError
from pipeline.files import output_lock
from pipeline.progress import Progress
from pipeline.store import FeatureSource

logger = logging.getLogger(__name__)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
               amp: bool | None = None, clip: float = 1.0, **forward) -> MAFOutput:
    """One optimisation step on a collated batch already on `device`: forward (bf16 autocast
    where on), backward, global gradient clipping, optimizer step. `forward`: generator,
    negatives, shard. `model` may be MAF or UMT, or either wrapped in DistributedDataParallel."""
    with autocast(device, amp):
        out = model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, tags=batch["tags"], **forward)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if not getattr(optimizer, "clips_each_tensor", False):
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return out


def _rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])


@dataclass
class Position:
    """Where training stands: the next epoch, the best dev F1 so far and its epoch, the step count."""

    epoch: int = 1
    best_f1: float = -1.0
    best_epoch: int = 0
    step: int = 0


def train(features: FeatureSource, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
          config: TrainConfig, resume: bool = False, on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train, evaluate on dev every epoch, keep the best, test it; returns the report.

    `features`: a `FeatureStore` (`FeatureStore("store.h5")`), or `maf_core.online.OnlineFeatures`
    (the backbone in every step).
    The caller's `model_config` is not changed: the run's own is fitted to the text and store.
    One writer per run directory: a second `maf train` on the same --out is refused at once.
    """
    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, the first process holds the lock
    with output_lock(out_dir) if lead else nullcontext():
        return _train_locked(features, text_dir, out_dir, model_config, config, resume, on_epoch_end)


def _train_locked(features: FeatureSource, text_dir: str | Path, out_dir: str | Path, model_config: MAFConfig,
                  config: TrainConfig, resume: bool, on_epoch_end: Callable[[int], None] | None) -> dict:
    run = RunDirectory(out_dir)
    inputs = read_inputs(features, text_dir, model_config, config)
    model_config = fit_to_inputs(model_config, inputs)
    state = None
    if resume:
        state, model_config = check_resume(run, inputs.record, model_config.architecture)
    elif not run.is_empty():
        raise DataError(f"{run.path}: exists and is not empty; pass --resume to continue that run, or another --out")

    device = distributed.setup(config.device) if distributed.launched() else resolve_device(config.device)
    config = replace(config, amp=models.uses_amp(config.amp, model_config, device.type))  # None -> on or off
    rank, world = distributed.rank_and_world()
    # the encoder is built (and refused, for heads that do not fit, say) before anything is written
    model, wrapped = build_model(model_config, config.seed, device, rank, world)
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
    position = Position()
    if state is not None:
        position = _restore(state, model, optimizer, scheduler, run.path, rank, world)
    if rank == 0:
        logger.info("%s", run_summary(model, inputs, config, device, world, steps_per_epoch, run.path))
        few_images = start_warning(model.config, readable_by_split(inputs.splits, inputs.store))
        if few_images:
            logger.warning("%s", few_images)
        if model.config.bert is None and model.config.word_vocab is None:  # the word models warn of their own
            logger.warning("the text encoder is %s (no --bert): fine for tests and the offline demo, meaningless "
                           "for real data; pass --bert bert-base-cased or a local encoder directory",
                           describe_encoder(model.config))
    writes_board = rank == 0 and config.tensorboard
    board = Board(run.file("tb") if writes_board else None, position.step, loss_parts(model.config),
                  dev_annotations(inputs.meta) if writes_board else None)

    for epoch in range(position.epoch, config.epochs + 1):
        started = time.perf_counter()
        losses = train_one_epoch(wrapped, model, optimizer, scheduler, inputs, config, epoch, position, device,
                                 board)
        train_seconds = time.perf_counter() - started
        dev_split = inputs.splits["valid"]
        dev, _, dev_probs = evaluate_split(model, dev_split, inputs.store, model.config.tags, model.config.scheme,
                                           config.eval_batch_size, device, config.amp, progress_every=config.log_every)
        board.epoch(epoch, dev, dev_split.image_ids, dev_probs, model.has_p)
        seconds = time.perf_counter() - started
        improved = dev["overall"]["f1"] > position.best_f1
        if improved:
            position.best_f1, position.best_epoch = dev["overall"]["f1"], epoch
            if rank == 0:
                run.save_best(model)
        logger.info("epoch %d/%d  loss %.3f (ner %.3f ca %.3f cm %.3f)  dev F1 %.2f%s  %.0f s", epoch, config.epochs,
                    losses["loss"], losses["ner"], losses["ca"], losses["cm"], dev["overall"]["f1"],
                    " (best)" if improved else "", seconds)
        line = metrics_line(epoch, losses, dev, scheduler.get_last_lr()[0], seconds, train_seconds)
        end_epoch(run, line, model, optimizer, scheduler, epoch, position, rank)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    board.close()
    return evaluate_best(run, inputs.splits, inputs.store, device, config.eval_batch_size, position.best_epoch,
                         config.amp)


def build_model(model_config: MAFConfig, seed: int, device: torch.device, rank: int,
                world: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The seeded model, and `wrapped`, what each optimisation step calls: DDP around the model
    on several processes, the model itself on one. Weights are saved and evaluated from `model`."""
    random.seed(seed)
    torch.manual_seed(seed)
    model = models.build_model(model_config).to(device)  # MAF, or UMT for --model umt and mt
    torch.manual_seed(seed + 7919 * rank)  # each process its own dropout masks
    if world == 1:
        return model, model
    # BERT's pooler feeds only CA: without CA (text-only, w/o CA) its parameters get no gradient
    idle_pooler = model.config.pooling == "pooler" and getattr(model, "alignment", None) is None
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=idle_pooler)


def loss_parts(config: MAFConfig) -> tuple[str, ...]:
    """The loss parts this model has: total and ner always, ca and cm where CA and CM exist."""
    return ("total", "ner", *(["ca"] if config.visual and config.use_alignment else []),
            *(["cm"] if config.visual and config.use_matching else []))


def dev_annotations(meta: dict) -> dict[str, dict]:
    """Which images match their tweet (the corpus's annotations.jsonl), so that p's histograms
    can be drawn per relation."""
    path = corpus_annotations(meta)
    try:
        return read_annotations(path)
    except (ValueError, KeyError, TypeError, OSError) as err:  # only the histograms need it
        logger.warning("%s: unreadable (%s); p's histograms are drawn for all tweets", path, err)
        return {}


def _restore(state: dict, model, optimizer, scheduler, out_dir: Path, rank: int, world: int) -> Position:
    """Model, optimizer, schedule and RNG as last.pt left them; the position to continue from."""
    load_state_into(model, state["model"], out_dir / RunDirectory.LAST)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) != world:
        raise DataError(f"{out_dir}: was trained on {len(rngs)} processes; resume it on the same number, not {world}")
    _set_rng_state(rngs[rank])
    logger.info("resuming %s after epoch %d (best dev F1 %.2f at epoch %d)", out_dir, state["epoch"],
                state["best_f1"], state["best_epoch"])
    return Position(state["epoch"] + 1, state["best_f1"], state["best_epoch"], state["step"])


def epoch_batches(split: Split, config: TrainConfig, epoch: int, world: int = 1) -> list[list[int]]:
    """The global batches of one epoch, seeded by the run's seed and the epoch."""
    lengths = split.padded()["lengths"].tolist()
    batches = bucketed_batches(lengths, config.batch_size, shuffle=True, seed=config.seed * 100003 + epoch,
                               by_length=config.batching == "length")
    return [b for b in batches if len(b) >= world]  # a last batch smaller than the processes is left out


def shard_batch(split: Split, indices: list[int], store: FeatureSource, rank: int, world: int) -> dict:
    """This process's rows of a global batch, padded to the global batch's longest."""
    padded = split.padded()
    rows = np.asarray(indices)
    shard = distributed.BatchShard(rank, distributed.split_sizes(len(indices), world)) if world > 1 else None
    mine = indices[shard.rows] if shard is not None else indices
    batch = collate(split, mine, store, length=int(padded["lengths"][rows].max()),
                    words=max(1, int(padded["words"][rows].max())))
    batch["shard"] = shard
    return batch


def train_one_epoch(wrapped, model: torch.nn.Module, optimizer, scheduler, inputs: Inputs, config: TrainConfig,
                    epoch: int, position: Position, device: torch.device,
                    board: Board | None = None) -> dict[str, float]:
    """One pass over the training split (position.step advances); the mean of each loss part.
    A bar (or log lines) shows the steps; `board` gets every step's losses and learning rates."""
    rank, world = distributed.rank_and_world()
    split = inputs.splits["train"]
    batches = epoch_batches(split, config, epoch, world)
    matching = model.config.visual and model.config.use_matching
    wrapped.train()
    sums = torch.zeros(4, device=device)  # loss, ner, ca, cm: summed on the device, read once per epoch
    per_step, lrs, first_step = [], [], position.step  # for TensorBoard, read once per epoch
    groups = [group.get("name", str(n)) for n, group in enumerate(optimizer.param_groups)]
    bar = Progress(len(batches), f"epoch {epoch}/{config.epochs}", "steps", every=config.log_every,
                           log=logger, enabled=rank == 0, leave=False, final=False)

    def running_loss() -> dict[str, float]:  # read only when the bar shows it: one device sync
        return {"loss": sums[0].item() / max(1, position.step - first_step)}

    prepared = (shard_batch(split, indices, inputs.store, rank, world) for indices in batches)
    for batch in _prefetched(prepared, device):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + position.step)
        shard = batch.pop("shard")
        negatives = None
        if matching and shard is None:  # drawn here from the CPU copy of image_ok: no device sync
            negatives = choose_negatives(batch["image_ok_cpu"], model.pairs_for(len(batch["image_ok_cpu"])),
                                         model.config.negatives, generator)
        lrs.append([group["lr"] for group in optimizer.param_groups])
        out = train_step(wrapped, optimizer, batch, device, config.amp, config.clip, generator=generator,
                         negatives=negatives, shard=shard)
        scheduler.step()
        position.step += 1
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


def end_epoch(run: RunDirectory, line: dict, model: torch.nn.Module, optimizer, scheduler, epoch: int,
              position: Position, rank: int) -> None:
    """metrics.jsonl gets the line and last.pt the whole state (the first process), then every
    process waits until they are written."""
    rngs = distributed.all_gather_objects(_rng_state())
    if rank == 0:
        run.append_metrics(line)
        run.save_last({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "epoch": epoch, "best_f1": position.best_f1,
                       "best_epoch": position.best_epoch, "step": position.step, "rng": rngs})
    distributed.barrier()


def _prefetched(batches: Iterator[dict], device: torch.device) -> Iterator[dict]:
    """Batches moved to `device`. On CUDA the next batch is gathered, pinned and copied in a
    background thread while the current one trains; on CPU that thread would only compete
    with the model for the same cores, so batches are made in turn."""
    def load(batch: dict) -> dict:
        shard, image_ok = batch.pop("shard"), batch.get("image_ok")
        return {**to_device(batch, device), "image_ok_cpu": image_ok, "shard": shard}

    if device.type != "cuda":
        yield from map(load, batches)
        return
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in batches:
            future = pool.submit(load, batch)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def images_record(model_config: MAFConfig, splits: dict[str, Split], store: FeatureSource) -> dict:
    """What report.json records of the images the model saw: the readable share of each split
    ("images"), and a note when a model that reads images saw none in training ("notes")."""
    seen = readable_by_split(splits, store)
    note = no_image_note(model_config, seen)
    return {**({"images": seen} if seen is not None else {}), **({"notes": [note]} if note else {})}


def evaluate_best(run: RunDirectory, splits: dict[str, Split], store: FeatureSource, device: torch.device,
           batch_size: int, best_epoch: int, amp: bool | None = None) -> dict:
    """Evaluate best/ on dev and test; write report.json and predictions/ (the first process)."""
    model = run.load_best(device)
    lead = distributed.rank_and_world()[0] == 0
    report = {"best_epoch": best_epoch, "encoder": describe_encoder(model.config)}
    report.update(images_record(model.config, splits, store))
    for name in ("valid", "test"):
        if name not in splits:
            continue
        scores, predicted, probs = evaluate_split(model, splits[name], store, model.config.tags, model.config.scheme,
                                                  batch_size, device, amp)
        report[name] = scores
        if lead:
            write_predictions(run.predictions(), splits[name], predicted, probs)
        logger.debug("%s\n%s", name, table(scores, name))
    if lead:
        run.write_report(report)
        run.write_model_card(report)
    distributed.barrier()
    return report


