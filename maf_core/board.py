"""TensorBoard event files of a run (RUN/tb/), written through `torch.utils.tensorboard`.

    loss/total, loss/ner, loss/ca, loss/cm   every step: the weighted total and each part
                                             (ca and cm only where the model has CA and CM)
    lr/<group>                               every step: the learning rate of each parameter
                                             group (bert or heads, with or without weight decay)
    dev/precision, dev/recall, dev/f1        every epoch: entity-level scores on the dev split
    p/dev_matched, p/dev_unrelated           every epoch: histograms of CM's match probability p
                                             on dev tweets, where the corpus annotates which
                                             images match (p/dev_with_image otherwise)

`tensorboard --logdir runs/` shows every run side by side. Only the first process writes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from maf_core.metrics import p_by_relation

LOSS_PARTS = ("total", "ner", "ca", "cm")


class Board:
    def __init__(self, directory: str | Path | None, first_step: int, parts: tuple[str, ...],
                 annotations: dict[str, dict] | None = None) -> None:
        """`directory` None: write nothing. `first_step`: steps from here on replace any an
        interrupted run had written (a resumed run continues its curves without a fold)."""
        self.parts = parts
        self.annotations = annotations or {}
        self.writer = None
        if directory is not None:  # tensorboard loads only where it writes
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(directory), purge_step=first_step + 1 if first_step else None)

    def steps(self, first: int, losses: torch.Tensor, lrs: list[list[float]], groups: list[str]) -> None:
        """losses (steps, 4): total, ner, ca, cm of each step from step `first` on; lrs: per step, per group."""
        if self.writer is None:
            return
        values = losses.detach().float().cpu().numpy()
        for row, step in enumerate(range(first + 1, first + 1 + len(values))):
            for column, part in enumerate(LOSS_PARTS):
                if part in self.parts:
                    self.writer.add_scalar(f"loss/{part}", float(values[row, column]), step)
            for name, lr in zip(groups, lrs[row]):
                self.writer.add_scalar(f"lr/{name}", lr, step)

    def epoch(self, epoch: int, dev: dict, ids: list[str], probs: list[float], with_p: bool) -> None:
        if self.writer is None:
            return
        for metric in ("precision", "recall", "f1"):
            self.writer.add_scalar(f"dev/{metric}", dev["overall"][metric], epoch)
        if with_p:
            for group, values in p_by_relation(ids, probs, self.annotations).items():
                if values:
                    tag = "p/dev_" + group.replace("tweets with an image", "with_image")
                    self.writer.add_histogram(tag, np.asarray(values), epoch, bins=np.linspace(0, 1, 21))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
