"""Reading a torch pickle (`.pth`, `.pt`) that a user hands over or a run left: tensors and plain
containers only (`weights_only=True`), and a one-line DataError naming the file for anything else.

Every `.pth`/`.pt` the project reads goes through `load_state`: the backbone's `--weights`
file, a run's `last.pt` on `--resume`, an older run's `best/model.pt`, extraction's
`bn_stats.pt`. Torch's own message for such a file runs to several lines and advises
loading it again with `weights_only=False`, which would run whatever code the pickle holds:
the wrong advice for a file from the internet, so none of it is passed on.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from pipeline.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6: a zip archive
PICKLE_MAGIC = b"\x80"      # a pickle of protocol 2 or later: torch.save's older format, or pickle.dump
# how torch's weights-only unpickler names what a pickle asks to import ("GLOBAL posix.system")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The dict of tensors (and plain containers) in a torch pickle at `path`.

    DataError in one line: "<path>: not a PyTorch checkpoint (...)" for a file torch cannot
    read (text, an HTML page saved by a failed download, an empty or cut file), "<path>: not
    a state dict (...)" for a pickle of something else: one that would import code when
    unpickled (refused before it runs), or that holds a list or a lone tensor.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's note on an unusual pickle protocol: noise for a file refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: {_why_unreadable(path, str(err))}") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a state dict (it holds a {type(state).__name__}, not a dict of tensors)")
    return state


def _why_unreadable(path: Path, torch_message: str) -> str:
    """What the file is, in a few words, from its first bytes and torch's refusal (never torch's advice)."""
    wanted = _GLOBAL.search(torch_message)
    if wanted:
        return (f"not a state dict of plain tensors: unpickling it would import {wanted.group(1)}; "
                "refused before it runs")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "not a PyTorch checkpoint (an empty file)"
    if head.startswith(ZIP_MAGIC):
        return "not a PyTorch checkpoint (a zip archive torch cannot read, or a cut download)"
    if head.startswith(PICKLE_MAGIC):
        return "not a PyTorch checkpoint (a pickle that is not torch's, or a cut download)"
    text = head.decode("utf-8", errors="replace").split("\n", 1)[0].strip()
    if text and text.isprintable() and "\ufffd" not in text:
        return f"not a PyTorch checkpoint (a text file beginning {text[:40]!r})"
    return "not a PyTorch checkpoint (torch cannot read it)"
