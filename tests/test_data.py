"""Batching, collation and the learning-rate schedule, each on its own."""
from __future__ import annotations

import pytest
import torch

from maf_core.data import Split, bucketed_batches, collate
from maf_core.optim import linear_schedule


def test_linear_schedule_warms_up_then_ends_at_exactly_zero():
    factor = linear_schedule(100, 0.1)
    assert [factor(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factor(10) == pytest.approx(89 / 90)
    assert factor(99) == 0.0 and factor(150) == 0.0  # the last step, and any step past it


@pytest.mark.parametrize("by_length", [True, False])
def test_training_batches_hold_every_tweet_once(by_length):
    lengths = [(i * 37) % 90 + 3 for i in range(1000)]
    batches = bucketed_batches(lengths, 32, shuffle=True, seed=4, by_length=by_length)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(1 <= len(b) <= 32 for b in batches)
    assert bucketed_batches(lengths, 32, shuffle=True, seed=4, by_length=by_length) == batches  # seeded
    assert bucketed_batches(lengths, 32, shuffle=True, seed=5, by_length=by_length) != batches


def test_length_grouping_pads_less_and_keeps_rows_unsorted():
    lengths = [(i * 37) % 90 + 3 for i in range(1000)]

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = bucketed_batches(lengths, 32, shuffle=True, seed=4)
    assert padding(grouped) < 0.2 * padding(bucketed_batches(lengths, 32, shuffle=True, seed=4, by_length=False))
    ordered = sum(all(lengths[a] <= lengths[b] for a, b in zip(rows, rows[1:])) for rows in grouped if len(rows) > 8)
    assert ordered == 0  # no batch comes sorted by length


def test_evaluation_batches_keep_the_order():
    assert bucketed_batches([5, 3, 9, 1, 2], 2, shuffle=False, seed=0) == [[0, 1], [2, 3], [4]]


def test_collate_pads_pieces_and_words_per_batch():
    split = Split("train", ["a", "b", "c"], [["x"] * 2, ["y"] * 4, ["z"]], [["O"] * 2, ["O"] * 4, ["O"]],
                  [[2, 10, 11, 3], [2, 20, 21, 22, 23, 24, 3], [2, 30, 3]],
                  [[1, 2], [1, 2, 4, -1], [1]], [[1, 2], [3, 4, 5, 6], [7]])
    batch = collate(split, [2, 0], None)
    assert batch["input_ids"].tolist() == [[2, 30, 3, 0], [2, 10, 11, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["word_starts"].tolist() == [[1, 0], [1, 2]] and batch["tags"].tolist() == [[7, 0], [1, 2]]
    assert batch["word_mask"].tolist() == [[True, False], [True, True]]
    assert batch["index"].tolist() == [2, 0]
    wide = collate(split, [1], None, length=9, words=5)  # a truncated word (-1) comes last and is masked out
    assert wide["input_ids"].shape == (1, 9) and wide["word_mask"].tolist() == [[True, True, True, False, False]]
    assert wide["word_starts"][0, :3].tolist() == [1, 2, 4]
    assert wide["input_ids"].dtype == torch.int64
