"""The frozen image encoder: a torchvision ResNet cut after layer4, its weights and BatchNorm statistics.

Output per image: the layer4 map adaptively pooled to 7x7 = 49 region vectors (whatever the
input size) and the global average of the layer4 map (the pooled vector). Always run in eval
mode, so an image's features never depend on the other images of its batch.
"""
from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.errors import DataError
from pipeline.files import file_sha256
from pipeline.torch_files import load_state

logger = logging.getLogger(__name__)

BACKBONES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}
# File names of the ImageNet weights: torchvision's current one, and the older one the MNER
# repositories (UMT, MAF) ask users to download.
WEIGHT_FILES = {
    "resnet18": ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
    "resnet34": ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth"),
    "resnet152": ("resnet152-394f9c45.pth", "resnet152-b121ed2d.pth"),
}
GRID = 7  # 7 x 7 = 49 regions


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without avgpool and fc: images → (regions, pooled)."""

    def __init__(self, name: str, zero_init_residual: bool = False) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise DataError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
        net = torchvision.models.get_model(name, weights=None, zero_init_residual=zero_init_residual)
        self.name = name
        self.channels = BACKBONES[name]
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # shape: images (B, 3, H, W) -> fmap (B, C, h, w); h = w = 7 for 224 inputs
        fmap = self.body(images)
        # shape: regions (B, 49, C), row-major over the 7 x 7 grid
        regions = nn.functional.adaptive_avg_pool2d(fmap, GRID).flatten(2).transpose(1, 2)
        pooled = fmap.mean(dim=(2, 3))  # shape: (B, C)
        return regions, pooled


def _body_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict (optionally wrapped or DataParallel-prefixed) → body keys."""
    for key in ("state_dict", "model"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        key = key.removeprefix("module.")
        head = key.split(".", 1)[0]
        if head in names:
            out[f"body.{names.index(head)}.{key.split('.', 1)[1]}"] = value
    return out


def _imagenet_file(name: str) -> Path:
    """The torchvision ImageNet weights file in torch's cache; fails at once when offline."""
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    filename = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    host = weights.url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        current, older = WEIGHT_FILES[name]
        raise DataError(
            f"--weights imagenet: {filename} is not in torch's cache ({cached.parent}) and {host} "
            f"cannot be reached. Download {weights.url} (or the {older} file the MNER repositories "
            f"use) on a machine with internet and pass it as --weights /path/to/{current}"
        ) from None
    torch.hub.load_state_dict_from_url(weights.url, progress=True, check_hash=True)
    return cached


def random_identity(seed: int) -> str:
    """The fingerprint identity of `--weights none` with `seed` (the init is part of it)."""
    return f"random:{seed}:zero-residual"


def random_seed(identity: str) -> int | None:
    """The seed of a random-weights identity this code makes again; None for another init."""
    try:
        seed = int(identity.split(":")[1])
    except (IndexError, ValueError):
        return None
    return seed if identity == random_identity(seed) else None


def resolve_weights(name: str, weights: str, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """`imagenet` | a .pth path | `none` → (body state dict, identity for the fingerprint).

    `none` initialises as torchvision does with `zero_init_residual=True` (Goyal et al. 2017):
    the last BatchNorm of every residual branch has weight 0, so each block starts as the
    identity and the features come from the stem and the stages' projection shortcuts. With
    torchvision's default init, ResNet-152's 50 random residual branches scramble the input:
    images differing by a few levels of colour get unrelated features, so a random ResNet-152
    would show little in the demo (the nearest-centroid probe on the sample's image classes in
    tests/test_sample.py: 54% held-out accuracy with the default init, 99% with this one).
    """
    if weights == "none":
        torch.manual_seed(seed)
        logger.warning(
            "backbone %s has RANDOM weights (seed %d, residual branches zero-initialised): fine for "
            "tests and the offline demo, meaningless for real data; pass --weights imagenet or "
            "--weights resnet152-b121ed2d.pth", name, seed
        )
        state = ResNetFeatures(name, zero_init_residual=True).state_dict()
        return state, {"kind": "random", "identity": random_identity(seed)}
    path = _imagenet_file(name) if weights == "imagenet" else Path(weights)
    if not path.is_file():
        raise DataError(f"--weights {weights}: no such file (expected imagenet, none, or a .pth state dict)")
    raw = load_state(path)
    state = _body_state(raw)
    if not state:
        first = next(iter(raw), None)
        raise DataError(f"{path}: not a state dict of a ResNet (none of its {len(raw)} keys names a ResNet layer"
                        + (f", e.g. {repr(first)[:60]})" if first is not None else ")"))
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise DataError(f"{path}: not a state dict of tensors ({not_tensors[0]} holds a "
                        f"{type(state[not_tensors[0]]).__name__})")
    expected = ResNetFeatures(name).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or extra or wrong:
        raise DataError(
            f"{path}: not {name} weights: {len(missing)} tensors missing (e.g. {missing[:2]}), "
            f"{len(extra)} unexpected (e.g. {extra[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    kind = "imagenet" if weights == "imagenet" else "file"
    return {k: state[k] for k in expected}, {"kind": kind, "identity": f"sha256:{file_sha256(path)}", "file": path.name}


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm running statistics of `model`, by state-dict key."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out[f"{prefix}.running_mean"] = module.running_mean.detach().clone()
            out[f"{prefix}.running_var"] = module.running_var.detach().clone()
    return out


@torch.no_grad()
def estimate_bn_stats(model: ResNetFeatures, batches) -> dict[str, torch.Tensor]:
    """AdaBN: re-estimate every BatchNorm's running mean/var as the average over `batches`.

    Each layer sees the previous layers normalised by batch statistics, as in training
    (the same procedure as torch.optim.swa_utils.update_bn). Returns the new buffers; the
    model is left in eval mode with them loaded.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches seen
    model.train()
    seen = 0
    for batch in batches:
        model(batch)
        seen += len(batch)
    model.eval()
    for m in norms:
        m.momentum = 0.1
    if seen == 0:
        raise DataError("--bn-stats dataset: none of the sampled images could be read")
    return bn_buffers(model)


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A content hash of tensors (for the BatchNorm statistics recorded in a fingerprint)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
