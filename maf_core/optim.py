"""Optimisers and learning-rate schedules: AdamW with a linear warm-up and decay (`linear_schedule`),
or BertAdam and its warmup_linear schedule, as the released code trains MAF.

The released code (xubodhu/MAF, `mybert/optimization.py`, pytorch-pretrained-bert's BertAdam)
differs from AdamW in four ways, all kept here:
- no bias correction of the moments;
- each parameter tensor's gradient is clipped to norm `max_grad_norm` on its own (no global
  clipping);
- weight decay is added to the update before the learning rate scales it;
- eps 1e-6.
Its schedule, `warmup_linear(x) = x / warmup` while x < warmup, then `1 - x`, with
x = step / t_total, so the rate falls from 1.0 to 0.9 when warm-up ends. The released
script computes t_total = int(tweets / batch) * epochs while its DataLoader keeps the last,
smaller batch of every epoch, so the last steps get x > 1 and a negative rate; here the rate
stops at zero instead (`released_schedule`).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from maf_core.config import TrainConfig

logger = logging.getLogger(__name__)


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, per-tensor gradient clipping and decoupled weight decay."""

    clips_each_tensor = True  # the trainer then skips its global clipping

    def __init__(self, params, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, max_grad_norm: float = 1.0) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"BertAdam: invalid lr {lr}, eps {eps} or betas {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])  # this tensor alone
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                m, v = state["next_m"], state["next_v"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return loss


def released_total_steps(tweets: int, batch_size: int, epochs: int) -> int:
    """t_total as run_gate_cl.py computes it: int(tweets / batch) * epochs (the last, smaller
    batch of each epoch is not counted, though it is trained on)."""
    return int(tweets / batch_size) * epochs


def released_schedule(total: int, warmup: float) -> Callable[[int], float]:
    """warmup_linear at x = step / total: x / warmup during warm-up, then 1 - x, never below 0.

    The rate of step s (counted from 0) is the one BertAdam uses for it: 0 at the first step."""
    warned = []

    def factor(step: int) -> float:
        x = step / max(1, total)
        if x < warmup:
            return x / warmup
        if x > 1 and not warned:
            warned.append(step)
            logger.info("step %d is past the released code's t_total %d: its warmup_linear would turn the "
                        "rate negative here; it stays at 0", step, total)
        return max(0.0, 1.0 - x)
    return factor


def optimizer_for(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, BertAdam or SGD; no weight decay on biases and LayerNorm weights; `head_lr` for the parts after BERT."""
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
        return BertAdam(param_groups, lr=config.lr, max_grad_norm=config.clip)
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum)
    cuda = all(p.is_cuda for params in groups.values() for p in params)
    return torch.optim.AdamW(param_groups, lr=config.lr,
                             fused=True if cuda else None)  # one kernel for all parameters on a GPU


def linear_schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the learning rate at step s: up to 1 over the warm-up, then down to exactly 0.

    Not transformers' get_linear_schedule_with_warmup: that one gives step 0 a rate of 0 (a step
    that trains nothing) and is one step later throughout; this one, which every run so far was
    trained with, is kept so that results stay as they were."""
    warm = max(1, math.ceil(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step - 1) / max(1, total - warm))
    return factor


def schedule_for(config: TrainConfig, tweets: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier per step: linear_schedule, BertAdam's warmup_linear over
    the released code's step count, or SGD's per-epoch decay."""
    if config.optimizer == "bertadam":
        return released_schedule(released_total_steps(tweets, config.batch_size, config.epochs), config.warmup)
    if config.optimizer == "sgd":  # no warm-up; 1 / (1 + decay * epochs done)
        return lambda step: 1.0 / (1.0 + config.lr_decay * (step // max(1, steps_per_epoch)))
    return linear_schedule(steps_per_epoch * config.epochs, config.warmup)
