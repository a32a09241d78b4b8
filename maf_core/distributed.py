"""Data-parallel training over processes (`torchrun --nproc_per_node N -m cli.maf train ...`).

One global batch (`--batch-size`, as on one process) is cut into contiguous row ranges, one
per process; `BatchShard` says which rows are this process's. CA and CM take their in-batch
negatives from the whole global batch: the tensors they contrast are gathered from every
process with `gather_rows`, whose backward sums the gradients of all processes (as in
distributed CLIP training). Each process's loss is `world ×` its share of the global loss, so
after DistributedDataParallel averages the gradients, N processes take the same step as one
process with the whole batch (tests/test_distributed.py checks this with gloo on CPU).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass
class BatchShard:
    """This process's rows of a global batch: `sizes[r]` rows for process r, in rank order."""

    rank: int
    sizes: list[int]

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def rows(self) -> slice:
        start = sum(self.sizes[: self.rank])
        return slice(start, start + self.sizes[self.rank])


def split_sizes(total: int, world: int) -> list[int]:
    """Rows per process for a batch of `total`: contiguous, differing by at most one."""
    return [total // world + (r < total % world) for r in range(world)]


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Started by torchrun (or another launcher setting WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> torch.device:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); this process's device."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


class _GatherRows(torch.autograd.Function):
    """All processes' rows, concatenated in rank order; backward sums every process's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        most = max(sizes)
        padded = x.new_zeros((most, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # d(sum of all processes' losses) / d(gathered rows)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def gather_rows(x: torch.Tensor, shard: BatchShard | None) -> torch.Tensor:
    """The global batch's rows of `x` (B_local, ...) -> (B_global, ...); `x` itself on one process."""
    if shard is None or shard.world == 1:
        return x
    if x.dtype == torch.bool:
        return _GatherRows.apply(x.to(torch.uint8), shard.sizes, shard.rank).bool()
    return _GatherRows.apply(x, shard.sizes, shard.rank)


def all_gather_objects(value):
    """Every process's `value`, in rank order (plain Python objects; one process: [value])."""
    rank, world = rank_and_world()
    if world == 1:
        return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def mean_over_processes(x: torch.Tensor) -> torch.Tensor:
    if rank_and_world()[1] == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


@contextmanager
def session() -> Iterator[None]:
    """Work under torchrun: the process group it started is closed afterwards, even after an error."""
    try:
        yield
    finally:
        if rank_and_world()[1] > 1:
            dist.destroy_process_group()
