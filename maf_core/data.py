"""Training data: tokenized Arrow text joined with store.h5 features, padded per batch.

Batches are built from tweets of similar length (bucketed, then shuffled as batches), so a
batch pads to its own longest tweet, not to 128; the rows inside a batch come in random
order, so that which rows CM swaps never depends on length. Image features are gathered for
the whole batch at once from the store's memory map.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import DataError
from pipeline.store import FeatureSource
from pipeline.tokenization import read_split

# characters of a word that the word-level models read (word_chars); longer words are cut
MAX_WORD_CHARS = 32


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
    _padded: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    def padded(self) -> dict[str, np.ndarray]:
        """The split as zero-padded arrays, built once: a batch is then a row gather, not a
        Python loop per tweet (which cost about 0.1 ms a tweet)."""
        if self._padded is None:
            kept = [[s for s in starts if s >= 0] for starts in self.word_starts]  # cut words come last
            n = len(self)
            lengths = np.array([len(x) for x in self.input_ids], dtype=np.int64)
            words = np.array([len(k) for k in kept], dtype=np.int64)
            input_ids = np.zeros((n, max(1, int(lengths.max(initial=0)))), dtype=np.int64)
            starts = np.zeros((n, max(1, int(words.max(initial=0)))), dtype=np.int64)
            tags = np.zeros_like(starts)
            # each word's first MAX_WORD_CHARS characters as Unicode code points, 0 beyond
            chars = np.zeros((n, starts.shape[1], MAX_WORD_CHARS), dtype=np.int32)
            for i in range(n):
                input_ids[i, : lengths[i]] = self.input_ids[i]
                starts[i, : words[i]] = kept[i]
                tags[i, : words[i]] = self.tag_ids[i][: words[i]]
                for w, word in enumerate(self.words[i][: words[i]]):
                    points = np.frombuffer(word[:MAX_WORD_CHARS].encode("utf-32-le"), dtype=np.uint32)
                    chars[i, w, : len(points)] = points
            self._padded = {"input_ids": input_ids, "lengths": lengths, "word_starts": starts, "words": words,
                            "tags": tags, "word_chars": chars}
        return self._padded


def load_split(text_dir: str | Path, split: str) -> Split:
    table = read_split(text_dir, split).to_pydict()
    return Split(split, table["image_id"], table["words"], table["labels"], table["input_ids"],
                 table["word_starts"], table["tag_ids"])


def check_ids_in_store(split: Split, store: FeatureSource | None, text_dir: str | Path) -> None:
    """Every tweet's image id must be in the store (its status may be anything)."""
    if store is None:
        return
    absent = sorted({i for i in split.image_ids if i not in store})
    if absent:
        raise DataError(f"{store.path}: {len(absent)} image ids of {Path(text_dir) / split.name}.arrow are not in "
                        f"the store, e.g. {', '.join(map(repr, absent[:5]))}; extract them with "
                        "`maf-pipe extract-images IMAGES --ids-from DATA_DIR --out STORE`")


def bucketed_batches(lengths: list[int], batch_size: int, shuffle: bool, seed: int,
                     by_length: bool = True) -> list[list[int]]:
    """Indices cut into batches.

    Shuffled, by length: tweets are shuffled, sorted by length within windows of 50 batches,
    cut into batches, the batches shuffled, and the rows inside each batch shuffled (CM swaps
    the last rows of a batch with `negatives = "tail"`: sorted rows would make the longest
    tweets of every batch the negatives). Shuffled, not by length: a random permutation cut
    into batches (a RandomSampler, as the released code). Not shuffled (evaluation): in order.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(order)
    if not by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    for rows in batches:
        rng.shuffle(rows)
    return batches


def collate(split: Split, indices: list[int], store: FeatureSource | None, length: int | None = None,
            words: int | None = None) -> dict:
    """A batch of tensors: pieces padded to the batch's longest (or `length`), words to its
    most words (or `words`), and each word's characters (code points, for the word-level
    models). Padding is token id 0 (BERT's [PAD])."""
    arrays = split.padded()
    rows = np.asarray(indices, dtype=np.int64)
    lengths, counts = arrays["lengths"][rows], arrays["words"][rows]
    length = int(lengths.max()) if length is None else length
    words = max(1, int(counts.max())) if words is None else words

    def cut(name: str, width: int) -> torch.Tensor:
        taken = arrays[name][rows, :width]
        if taken.shape[1] < width:
            taken = np.pad(taken, ((0, 0), (0, width - taken.shape[1])))
        return torch.from_numpy(np.ascontiguousarray(taken))

    batch = {"input_ids": cut("input_ids", length),
             "attention_mask": torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)),
             "word_starts": cut("word_starts", words),
             "word_mask": torch.from_numpy(np.arange(words)[None, :] < counts[:, None]),
             "tags": cut("tags", words), "index": torch.from_numpy(rows)}
    chars = arrays["word_chars"][rows, :words]
    if chars.shape[1] < words:
        chars = np.pad(chars, ((0, 0), (0, words - chars.shape[1]), (0, 0)))
    batch["word_chars"] = torch.from_numpy(np.ascontiguousarray(chars)).long()
    if store is not None:
        features = store.gather([split.image_ids[i] for i in indices])
        batch["regions"] = torch.from_numpy(np.ascontiguousarray(features.regions))
        batch["pooled"] = torch.from_numpy(np.ascontiguousarray(features.pooled))
        batch["image_ok"] = torch.from_numpy(features.status == 0)
    return batch
