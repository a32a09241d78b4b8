"""Data-parallel training: 2 gloo processes on CPU take the same step as 1 process with the
whole batch, and evaluation predicts every tweet exactly once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maf_core.config import MAFConfig, TrainConfig
from maf_core.data import Split
from maf_core.distributed import BatchShard, gather_rows, split_sizes
from maf_core.inference import predict_split
from maf_core.matching import choose_negatives
from maf_core.model import MAF, MODEL_KEYS
from maf_core.optim import optimizer_for
from pipeline.store import Features

TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
BATCH = 9  # uneven on purpose: 5 rows on process 0, 4 on process 1


def _config(**overrides) -> MAFConfig:
    return MAFConfig.tiny(**{"scheme": "bioes", "matching_pairs": 3, **overrides})


def _batch() -> dict:
    """A fixed global batch: varied lengths, two tweets without an image."""
    g = torch.Generator().manual_seed(11)
    lengths = [12, 9, 7, 12, 5, 10, 8, 6, 11]
    length, words = max(lengths), max(lengths) - 2
    input_ids = torch.randint(1, 97, (BATCH, length), generator=g)
    attention = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids * attention
    word_mask = torch.arange(words)[None] < (torch.tensor(lengths) - 2)[:, None]
    word_starts = (torch.arange(words) + 1)[None].expand(BATCH, -1) * word_mask
    return {"input_ids": input_ids, "attention_mask": attention, "word_starts": word_starts, "word_mask": word_mask,
            "regions": torch.randn(BATCH, 4, 24, generator=g).half(), "pooled": torch.randn(BATCH, 24, generator=g),
            "image_ok": torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1]).bool(),
            "tags": torch.randint(0, len(TAGS), (BATCH, words), generator=g) * word_mask,
            "word_chars": torch.zeros(BATCH, words, 1, dtype=torch.long)}  # the word-level models'; MAF's unused


def _one_step(model: torch.nn.Module, core: MAF, batch: dict, rows: slice, shard: BatchShard | None) -> float:
    optimizer = optimizer_for(core, TrainConfig(lr=1e-3))
    negatives = choose_negatives(batch["image_ok"], core.pairs_for(BATCH), core.config.negatives,
                                 torch.Generator().manual_seed(5))
    out = model(**{k: batch[k][rows] for k in MODEL_KEYS}, tags=batch["tags"][rows], negatives=negatives, shard=shard)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
    optimizer.step()
    return float(out.loss.detach())


class _LoggingStore:
    """Features from a fixed table; records which ids this process asked for."""

    def __init__(self, ids: list[str]) -> None:
        g = torch.Generator().manual_seed(4)
        self.rows = {i: n for n, i in enumerate(ids)}
        self.regions = torch.randn(len(ids), 4, 24, generator=g).half().numpy()
        self.pooled = torch.randn(len(ids), 24, generator=g).numpy()
        self.asked: list[str] = []

    def gather(self, ids):
        self.asked += list(ids)
        rows = np.array([self.rows[i] for i in ids])
        return Features(self.regions[rows], self.pooled[rows], np.zeros(len(ids), np.uint8))


def _split(n: int = 13) -> Split:
    g = torch.Generator().manual_seed(8)
    ids, words, labels, pieces, starts, tag_ids = [], [], [], [], [], []
    for i in range(n):
        count = 2 + i % 4
        ids.append(f"img{i:03d}")
        words.append([f"w{j}" for j in range(count)])
        labels.append(["O"] * count)
        pieces.append([2] + torch.randint(5, 97, (count,), generator=g).tolist() + [3])
        starts.append(list(range(1, count + 1)))
        tag_ids.append([0] * count)
    return Split("valid", ids, words, labels, pieces, starts, tag_ids)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        core = MAF(_config())
        model = DistributedDataParallel(core)
        shard = BatchShard(rank, split_sizes(BATCH, world))
        loss = _one_step(model.train(), core, _batch(), shard.rows, shard)
        # a gathered tensor keeps rank order and its gradient reaches every process
        x = torch.full((shard.sizes[rank], 2), float(rank + 1), requires_grad=True)
        gathered = gather_rows(x, shard)
        (gathered.sum(1) * torch.arange(1.0, BATCH + 1)).sum().backward()

        split = _split()
        store = _LoggingStore(split.image_ids)
        predicted, probs = predict_split(core, split, store, TAGS, "bioes", batch_size=3, device=torch.device("cpu"))
        result = {"loss": loss, "gathered": gathered.detach().tolist(), "x_grad": x.grad.tolist(),
                  "asked": store.asked, "predicted": predicted, "probs": probs}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        if rank == 0:
            torch.save(core.state_dict(), Path(out_dir, "weights.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """One run of `_worker` on 2 gloo processes: each rank's results and rank 0's weights after the step."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True)
    return {"ranks": [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)],
            "weights": torch.load(out / "weights.pt", weights_only=True)}


@pytest.fixture(scope="module")
def one_process() -> dict:
    """The same step on 1 process with the whole batch: the weights after it."""
    torch.manual_seed(0)
    single = MAF(_config()).train()
    _one_step(single, single, _batch(), slice(0, BATCH), None)
    return single.state_dict()


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_with_the_whole_batch(two_processes, one_process):
    two = two_processes["weights"]
    worst = max(float((two[k].float() - one_process[k].float()).abs().max()) for k in one_process)
    assert worst < 1e-5, worst


@pytest.mark.slow
def test_the_step_moves_the_weights(one_process):
    """So the comparison above is not between untouched copies."""
    torch.manual_seed(0)
    start = MAF(_config()).state_dict()
    assert max(float((start[k].float() - one_process[k].float()).abs().max()) for k in one_process) > 1e-4


@pytest.mark.slow
def test_gathered_rows_keep_the_process_order(two_processes):
    # rows of process 0 (value 1), then of process 1 (value 2)
    assert two_processes["ranks"][0]["gathered"] == [[1.0, 1.0]] * 5 + [[2.0, 2.0]] * 4


@pytest.mark.slow
def test_the_gradient_of_a_gathered_row_sums_both_processes_losses(two_processes):
    ranks = two_processes["ranks"]
    assert ranks[0]["x_grad"] == [[2.0 * r] * 2 for r in range(1, 6)]
    assert ranks[1]["x_grad"] == [[2.0 * r] * 2 for r in range(6, 10)]


@pytest.mark.slow
def test_evaluation_asks_for_every_tweet_exactly_once(two_processes):
    ranks = two_processes["ranks"]
    asked = ranks[0]["asked"] + ranks[1]["asked"]
    assert sorted(asked) == sorted(_split().image_ids) and len(set(asked)) == len(asked)


@pytest.mark.slow
def test_evaluation_is_shared_by_both_processes(two_processes):
    ranks = two_processes["ranks"]
    assert ranks[0]["asked"] and ranks[1]["asked"]


@pytest.mark.slow
def test_both_processes_predict_what_one_process_predicts(two_processes):
    ranks = two_processes["ranks"]
    split = _split()
    torch.manual_seed(0)
    core = MAF(_config())
    core.load_state_dict(two_processes["weights"])
    expected, probs = predict_split(core, split, _LoggingStore(split.image_ids), TAGS, "bioes", 3, torch.device("cpu"))
    assert ranks[0]["predicted"] == ranks[1]["predicted"] == expected
    assert np.allclose(ranks[0]["probs"], probs, atol=1e-6)


def test_rows_per_process():
    assert split_sizes(9, 2) == [5, 4]
    assert split_sizes(64, 3) == [22, 21, 21]
    shard = BatchShard(1, [5, 4])
    assert (shard.world, shard.total, shard.rows) == (2, 9, slice(5, 9))


def _text_only_worker(rank: int, world: int, init_file: str, out_dir: str, plain_ddp: bool) -> None:
    """Two DDP steps of the text-only baseline, whose BERT pooler no loss reads."""
    from torch.nn.parallel import DistributedDataParallel

    from maf_core.train import build_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        config = _config().with_ablation(text_only=True)
        core, model = build_model(config, 0, torch.device("cpu"), rank, world)
        if plain_ddp:  # what build_model did before: DDP without find_unused_parameters
            model = DistributedDataParallel(core)
        shard = BatchShard(rank, split_sizes(BATCH, world))
        for _ in range(2):
            _one_step(model.train(), core, _batch(), shard.rows, shard)
        Path(out_dir, f"done{rank}").write_text("ok")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_text_only_trains_on_two_processes(tmp_path):
    mp.spawn(_text_only_worker, args=(2, str(tmp_path / "init"), str(tmp_path), False), nprocs=2, join=True)
    assert (tmp_path / "done0").is_file() and (tmp_path / "done1").is_file()


@pytest.mark.slow
def test_text_only_without_find_unused_parameters_would_fail(tmp_path):
    """The control: the pooler's parameters get no gradient, and plain DDP stops at the second step."""
    with pytest.raises(Exception, match="finished reduction|did not receive grad|unused parameters"):
        mp.spawn(_text_only_worker, args=(2, str(tmp_path / "init"), str(tmp_path), True), nprocs=2, join=True)
