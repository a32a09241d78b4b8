"""Inference with a trained model: the device, tagging a split, scoring it, writing its predictions.

What the trainer (every epoch's dev score and the final test), `maf evaluate`, `maf predict`
and `maf report`'s case study share; none of them imports the trainer for it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from maf_core import distributed
from maf_core.config import TrainConfig
from maf_core.data import Split, bucketed_batches, check_ids_in_store, collate, load_split
from maf_core.images_seen import no_image_line, readable_images
from maf_core.metrics import score
from maf_core.models import MODEL_KEYS, SavedModel, uses_amp
from maf_core.run import RunDirectory
from pipeline.conll import Tweet, write_conll
from pipeline.errors import DataError
from pipeline.files import atomic_output
from pipeline.progress import Progress
from pipeline.schemes import bioes_to_bio, get_entities
from pipeline.store import FeatureSource
from pipeline.tokenization import read_meta

logger = logging.getLogger(__name__)


def autocast(device: torch.device, amp: bool | None):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" if amp is None else amp)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device is visible here")
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch on `device`; on CUDA through pinned memory, so the copies overlap the compute."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict_split(
    model: SavedModel,
    split: Split,
    store: FeatureSource | None,
    tags: list[str],
    scheme: str,
    batch_size: int,
    device: torch.device,
    amp: bool | None = None,
    progress_every: float = 30.0,
    attention: dict[int, np.ndarray] | None = None,
) -> tuple[list[list[str]], list[float | None]]:
    """BIO tags per word (words cut by truncation get O) and p per tweet (None for a model without
    CM, as `model.has_p` says: UMT, MT, text-only, --no-matching), in split order; `amp`: bf16
    autocast, None = the model's default (`uses_amp`).

    `attention`, when given (and the model has CI), is filled with each tweet's CI attention
    per word over the regions, (kept words, regions) float32 by tweet index (`word_attention`).

    In a distributed run each process predicts every world-th tweet and all get the merged
    result: every tweet is predicted exactly once, none padded in or dropped.
    """
    model.eval()
    amp = uses_amp(amp, model.config, device.type)
    rank, world = distributed.rank_and_world()
    mine = list(range(rank, len(split), world))
    lengths = [len(split.input_ids[i]) for i in mine]
    done: dict[int, tuple[list[str], float | None]] = {}
    batches = bucketed_batches(lengths, batch_size, shuffle=False, seed=0)
    bar = Progress(len(batches), f"predict {split.name}", "batches", every=progress_every, log=logger,
                           enabled=rank == 0, leave=False, final=False)
    for batch_rows in batches:
        indices = [mine[r] for r in batch_rows]
        batch = to_device(collate(split, indices, store), device)
        with autocast(device, amp):
            out = model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, decode=True)
        # p, or None for a model without CM (UMT, MT, text-only, --no-matching), whatever its output holds
        probs = out.match_prob.float().cpu().tolist() if model.has_p else [None] * len(indices)
        if attention is not None and out.attention is not None:
            weights = word_attention(out, batch).cpu().numpy()
            for row, i in enumerate(indices):
                attention[i] = weights[row, : int(batch["word_mask"][row].sum())]
        for row, i in enumerate(indices):
            words = [tags[t] for t in out.tags[row]]
            words += ["O"] * (len(split.words[i]) - len(words))
            done[i] = (bioes_to_bio(words) if scheme == "bioes" else words, probs[row])
        bar.update(1)
    bar.close()
    if world > 1:
        merged: dict[int, tuple[list[str], float | None]] = {}
        for part in distributed.all_gather_objects(done):
            merged.update(part)
        done = merged
    if sorted(done) != list(range(len(split))):
        raise RuntimeError(f"{split.name}: predicted {len(done)} of {len(split)} tweets")
    return [done[i][0] for i in range(len(split))], [done[i][1] for i in range(len(split))]


def word_attention(output, batch: dict) -> torch.Tensor:
    """CI's attention of each word's first piece over the image regions, averaged over heads:
    (B, words, regions) float32, what the case study draws as a 7x7 heatmap per entity."""
    # shape: attention (B, heads, L, R) -> (B, L, R) -> gathered at word_starts (B, W) -> (B, W, R)
    mean = output.attention.float().mean(1)
    index = batch["word_starts"].to(mean.device).unsqueeze(-1).expand(-1, -1, mean.shape[-1])
    return mean.gather(1, index)


def evaluate_split(model, split, store: FeatureSource | None, tags, scheme, batch_size, device, amp: bool | None = None,
                   progress_every: float = 30.0) -> tuple[dict, list, list]:
    predicted, probs = predict_split(model, split, store, tags, scheme, batch_size, device, amp,
                                     progress_every=progress_every)
    return score(split.labels, predicted), predicted, probs


def write_predictions(out_dir: Path, split: Split, predicted: list[list[str]], probs: list[float | None]) -> None:
    """predictions/<split>.conll and .jsonl; a .jsonl row's match_prob is p, or null for a model
    without CM (what `predict_split` gives), as in `maf predict`'s output and the API."""
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


@torch.no_grad()
def tag_rows(model: SavedModel, split: Split, rows: list[int], store: FeatureSource | None) -> tuple[dict, object]:
    """One decoding forward over some rows of a split, on the CPU: the collated batch and the
    model's output (tags, p and CI's attention), for the case study."""
    batch = collate(split, rows, store)
    return batch, model(**{k: batch[k] for k in MODEL_KEYS}, decode=True)


def evaluate_run(run_dir: str | Path, split: str = "test", features: str | Path | None = None,
                 text_dir: str | Path | None = None, out_dir: str | Path | None = None,
                 batch_size: int | None = None, device: str = "auto") -> tuple[dict, Path]:
    """`maf evaluate`: score RUN/best on a split of the run's own data, or of other tokenized data
    and another store of the run's fingerprint, and write its predictions (CoNLL and JSONL).
    `batch_size`: default the run's own evaluation batch. Returns the scores and the folder written."""
    run = RunDirectory.open(run_dir)
    store = run.open_store(features, "extract with the run's settings, or use `maf predict --images`, which "
                                     "extracts with the run's exact backbone")
    text = run.data("text_dir", text_dir)
    meta = read_meta(text)
    run.check_text(meta, text)
    if split not in meta["splits"]:
        raise DataError(f"{text}: has no split {split!r} (it has {', '.join(meta['splits'])})")
    data = load_split(text, split)
    check_ids_in_store(data, store, text)
    device = resolve_device(device)
    model = run.load_best(device)
    batch_size = batch_size or int(run.record.get("train", {}).get("eval_batch_size", TrainConfig.eval_batch_size))
    seen = readable_images(data.image_ids, store)
    no_image = no_image_line(model.config, f"the {split} split of {text} (store {store.path})", seen["tweets"],
                             seen["readable"])
    if no_image:
        logger.warning("%s", no_image)
    scores, predicted, probs = evaluate_split(model, data, store, model.config.tags, model.config.scheme, batch_size,
                                              device)
    target = Path(out_dir) if out_dir else run.predictions(text_dir)
    write_predictions(target, data, predicted, probs)
    return scores, target
