"""Progress of long work, for a person at a terminal and for a log file.

On a terminal (stderr is a TTY): a live tqdm bar with the count, rate, ETA and a few figures
(the loss, say). Anywhere else (CI, nohup, a file): one log line every `every` seconds and one
at the end, so a slow step never looks hung and a log never fills with bar redraws.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

logger = logging.getLogger(__name__)


class Progress:
    """`update(n, figures)` after each piece of work; `figures` is called only when shown, so
    a value that costs a device sync (a loss on a GPU) is read a few times a second at most."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, every: float = 30.0,
                 log: logging.Logger = logger, enabled: bool = True, leave: bool = True,
                 final: bool = True) -> None:
        """`final`: log a line when the work is done even if it was too short for a periodic one
        (False: a short piece of work, an epoch's evaluation say, stays silent in the log)."""
        from tqdm import tqdm

        self.total, self.desc, self.unit, self.every, self.log = total, desc, unit, every, log
        self.enabled, self.final, self.logged = enabled, final, False
        self.done, self.new = initial, 0
        self.bar = tqdm(total=total, initial=initial, unit=f" {unit}", desc=desc, dynamic_ncols=True,
                        smoothing=0.1, file=sys.stderr, leave=leave, disable=None if enabled else True)
        self.start = self.last = time.perf_counter()

    @property
    def terminal(self) -> bool:
        return not self.bar.disable

    def update(self, n: int = 1, figures: Callable[[], dict[str, float]] | None = None) -> None:
        self.bar.update(n)
        self.done += n
        self.new += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.terminal:
            if figures is not None and now - self.last > 0.5:
                self.last = now
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in figures().items()}, refresh=False)
        elif now - self.last > self.every or (self.done == self.total and (self.final or self.logged)):
            self.last, self.logged = now, True
            self.log.info("%s", self.line(now, figures() if figures is not None else {}))

    def line(self, now: float, figures: dict[str, float]) -> str:
        """'epoch 3/12: 40/100 steps, 2.5 steps/s, ETA 24 s, loss 1.234'."""
        rate = self.new / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s"
        if self.done < self.total:
            text += f", ETA {eta:.0f} s"
        return text + "".join(f", {k} {v:.3f}" for k, v in figures.items())

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
