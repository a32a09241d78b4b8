"""Model weights on disk: safetensors (no pickle, nothing runs on load), and the torch pickles
of older runs, read with `weights_only=True`.

    DIR/config.json         the MAFConfig, enough to rebuild the network offline
    DIR/model.safetensors   the state dict (written by `MAF.save_pretrained`)
    DIR/model.pt            the same as a torch pickle: runs written before safetensors; read with a notice

Every expected mistake (a file that is not what it claims, a pickle that would run code,
weights of another configuration) is a one-line DataError naming the file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline.errors import DataError
from pipeline.files import atomic_output
from pipeline.torch_files import load_state

logger = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pt"


def weights_file(directory: str | Path) -> Path | None:
    """The weights in `directory`: model.safetensors, else an older run's model.pt, else None."""
    directory = Path(directory)
    for name in (WEIGHTS, LEGACY_WEIGHTS):
        if (directory / name).is_file():
            return directory / name
    return None


def save_weights(state: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """The state dict as DIR/model.safetensors, written to a temporary name and renamed."""
    from safetensors.torch import save

    path = Path(directory) / WEIGHTS
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}
    with atomic_output(path, "wb") as handle:
        handle.write(save(tensors, metadata={"format": "pt", "written_by": "maf"}))
    return path


def load_weights(directory: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in DIR (see `weights_file`); DataError if there is none or it cannot be read safely."""
    path = weights_file(directory)
    if path is None:
        raise DataError(f"{directory}: no {WEIGHTS} (or {LEGACY_WEIGHTS} of an older run)")
    if path.name == WEIGHTS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device=str(device))
        except (SafetensorError, OSError) as err:
            raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    state = load_pickled_state(path, device)  # a file that is not weights is refused before any notice
    logger.warning("%s: weights in the older torch pickle format, read with weights_only=True; "
                   "MAF.from_pretrained(...).save_pretrained(...) rewrites them as %s", path, WEIGHTS)
    return state


def load_pickled_state(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """A torch pickle of tensors and plain containers (a state dict, last.pt). Anything else,
    including a pickle that asks to import or call something, is refused in one line before it
    runs (`pipeline.torch_files.load_state`)."""
    return load_state(path, map_location=device)


def load_state_into(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """`model.load_state_dict(state)`, with a one-line DataError for weights of another configuration.
    A model that renamed parameters since `state` was saved maps the old names (its `upgrade_state`)."""
    upgrade = getattr(model, "upgrade_state", None)
    state = upgrade(state) if upgrade is not None else state
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or reshaped:
        parts = [f"{len(keys)} {what} (first: {keys[0]})" for keys, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
        raise DataError(f"{path}: not weights of the model its config.json describes: {'; '.join(parts)}")
    model.load_state_dict(state)
