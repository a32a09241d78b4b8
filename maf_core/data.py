"""Training data: tokenized Arrow text joined with store.h5 features, padded per batch.

Batches are built from tweets of similar length (bucketed, then shuffled as batches), so a
batch pads to its own longest tweet, not to 128. Image features are gathered for the whole
batch at once from the store's memory map.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import DataError
from pipeline.store import FeatureStore
from pipeline.tokenization import read_split


@dataclass
class Split:
    """One tokenized split in plain Python lists (tweets are short; this is small)."""

    name: str
    image_ids: list[str]
    words: list[list[str]]
    labels: list[list[str]]
    input_ids: list[list[int]]
    word_starts: list[list[int]]
    tag_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.image_ids)


def load_split(text_dir: str | Path, split: str) -> Split:
    table = read_split(text_dir, split).to_pydict()
    return Split(split, table["image_id"], table["words"], table["labels"], table["input_ids"],
                 table["word_starts"], table["tag_ids"])


def check_store(split: Split, store: FeatureStore | None, text_dir: str | Path) -> None:
    """Every tweet's image id must be in the store (its status may be anything)."""
    if store is None:
        return
    absent = sorted({i for i in split.image_ids if i not in store})
    if absent:
        raise DataError(f"{store.path}: {len(absent)} image ids of {Path(text_dir) / split.name}.arrow are not in "
                        f"the store, e.g. {', '.join(map(repr, absent[:5]))}; extract them with "
                        "`maf-pipe extract-images IMAGES --ids-from DATA_DIR --out STORE`")


def bucketed_batches(lengths: list[int], batch_size: int, shuffle: bool, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length.

    Shuffled: tweets are shuffled, sorted by length within windows of 50 batches, cut into
    batches, and the batches shuffled. Not shuffled (evaluation): in order.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(split: Split, indices: list[int], store: FeatureStore | None, pad_id: int = 0) -> dict:
    """A batch of tensors: pieces padded to the batch's longest, words to its most words."""
    n = len(indices)
    length = max(len(split.input_ids[i]) for i in indices)
    words = max(len(split.word_starts[i]) for i in indices)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros(n, length, dtype=torch.long)
    word_starts = torch.zeros(n, words, dtype=torch.long)
    word_mask = torch.zeros(n, words, dtype=torch.bool)
    tags = torch.zeros(n, words, dtype=torch.long)
    for row, i in enumerate(indices):
        ids, starts = split.input_ids[i], split.word_starts[i]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        kept = [s for s in starts if s >= 0]  # words cut by truncation come last and stay out
        word_starts[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        word_mask[row, : len(kept)] = True
        tags[row, : len(kept)] = torch.tensor(split.tag_ids[i][: len(kept)], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention, "word_starts": word_starts,
             "word_mask": word_mask, "tags": tags, "index": torch.tensor(indices)}
    if store is not None:
        features = store.gather([split.image_ids[i] for i in indices])
        batch["regions"] = torch.from_numpy(np.ascontiguousarray(features.regions))
        batch["pooled"] = torch.from_numpy(np.ascontiguousarray(features.pooled))
        batch["image_ok"] = torch.from_numpy(features.status == 0)
    return batch

