"""The start-of-run summary `maf train` logs before its first step: parameters by part, the
data (tweets with and without a readable image), the device and precision, the batches,
where the run is written."""
from __future__ import annotations

from pathlib import Path

import torch

from maf_core.config import TrainConfig
from maf_core.encoder import describe as describe_encoder
from maf_core.images_seen import readable_images
from maf_core.inputs import Inputs
from maf_core.models import count_parameters, model_name


def run_summary(model: torch.nn.Module, inputs: Inputs, config: TrainConfig, device: torch.device, world: int,
                steps_per_epoch: int, out_dir: Path) -> str:
    """What is about to run, before the first step: parameters by part, the data, the device, the run directory."""
    counts = count_parameters(model)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    parts = ", ".join(f"{name} {n / 1e6:.2f}M" for name, n in counts.items() if n and name != "total")
    lines = [f"{model_name(model.config)} on {describe_encoder(model.config)}: "
             f"{counts['total'] / 1e6:.2f}M trainable parameters ({parts})",
             f"frozen: {f'{frozen / 1e6:.2f}M' if frozen else 'none'} in the model; the image backbone is not "
             "in it (its features come from the store)"]
    for name, split in inputs.splits.items():
        seen = readable_images(split.image_ids, inputs.store)
        if seen is not None:
            ok = seen["readable"]
            lines.append(f"{name}: {len(split)} tweets, {ok} with a readable image, {len(split) - ok} without")
        else:
            lines.append(f"{name}: {len(split)} tweets (images read in every step)")
    amp = device.type == "cuda" if config.amp is None else config.amp
    lines.append(f"device {device}{f' x {world} processes' if world > 1 else ''}, "
                 f"{'bf16 autocast' if amp else 'fp32'}; global batch {config.batch_size}, {steps_per_epoch} steps "
                 f"per epoch x {config.epochs} epochs, {config.optimizer}, {config.batching} batches")
    lines.append(f"writing to {out_dir.resolve()}" + (f" (TensorBoard: {out_dir.resolve() / 'tb'})"
                                                       if config.tensorboard else ""))
    return "\n  ".join(["starting a run:", *lines])
