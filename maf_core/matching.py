"""CM, cross-modal matching (paper section 3.4): is this image related to this text? p in [0, 1]."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maf_core.config import MAFConfig


def choose_negatives(image_ok: torch.Tensor, pairs: int, mode: str,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows swap their C with which: (permutation (B,), is_negative (B,) bool).

    pairs: k random pairs among the rows with an image swap C (the paper, k = 15 of 64).
    tail: the last 2k rows with an image, their first half swapping with the second (the
    released code's last 16 of each batch). k shrinks to fit a small batch, always leaving
    at least one positive; with fewer than 3 usable rows nothing is swapped.
    """
    rows = torch.nonzero(image_ok, as_tuple=False).flatten()
    k = min(pairs, (len(rows) - 1) // 2)
    permutation = torch.arange(image_ok.shape[0], device=image_ok.device)
    negative = torch.zeros_like(image_ok, dtype=torch.bool)
    if k < 1:
        return permutation, negative
    if mode == "pairs":
        order = torch.randperm(len(rows), generator=generator, device="cpu").to(rows.device)
        chosen = rows[order[: 2 * k]]
    else:
        chosen = rows[-2 * k:]
    first, second = chosen[:k], chosen[k:]
    permutation[first], permutation[second] = second, first
    negative[chosen] = True
    return permutation, negative


class CrossModalMatching(nn.Module):
    """A linear classifier on flatten([T; C]) over `max_length` positions, zero padded (eq. 9-10).

    The fixed length makes p independent of how much a batch is padded.

    A linear W_f scores a pair additively: logit(T^a, C^b) = f(T^a) + g(C^b). When negatives
    swap C between tweets a and b (the paper's wording, `MAFConfig.swap = "c"`), the two
    negatives of a swap always score, in sum, exactly what the two positives score, so no
    training can separate them (tests/test_model.py shows the identity). With `swap = "image"`
    a negative is C recomputed by CI from T^a and the regions of b, so f and g see the same
    text in both kinds of pair and only the image differs.
    """

    def __init__(self, config: MAFConfig) -> None:
        super().__init__()
        self.max_length = config.max_length
        self.head = config.matching_head
        if self.head == "bilinear":
            self.classifier = nn.Bilinear(config.hidden_size, config.hidden_size, 1)
            nn.init.zeros_(self.classifier.weight)  # p = 0.5 at the start; the default init gives |logit| ~ sqrt(d)
        else:
            self.classifier = nn.Linear(config.max_length * 2 * config.hidden_size, 1)  # W_f

    def logits(self, text: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # shape: text T, image C (B, L, d); mask (B, L) -> (B,)
        if self.head == "bilinear":  # mean over the real pieces of each side, then t^T W c + b
            weight = mask.unsqueeze(-1).to(text.dtype)
            count = weight.sum(1).clamp(min=1)
            return self.classifier((text * weight).sum(1) / count, (image * weight).sum(1) / count).squeeze(-1)
        pair = torch.cat([text, image], dim=-1) * mask.unsqueeze(-1).to(text.dtype)  # padding rows -> 0
        length = pair.shape[1]
        if length > self.max_length:  # allowed while only padding lies beyond max_length
            if mask[:, self.max_length:].any():
                longest = int(mask.sum(1).max())
                raise ValueError(f"a sequence of {longest} pieces is longer than the CM max_length {self.max_length}")
            pair = pair[:, : self.max_length]
        pair = F.pad(pair, (0, 0, 0, self.max_length - pair.shape[1]))   # shape: (B, max_length, 2d)
        return self.classifier(pair.flatten(1)).squeeze(-1)

    def forward(self, text: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                negative: torch.Tensor | None = None, use: torch.Tensor | None = None,
                count: torch.Tensor | None = None, scale: float = 1.0):
        """p for the pairs (T_i, image_i) and, when `negative` is given, the BCE loss (eq. 11)
        over the rows in `use` (those with an image). The loss is a sum over those rows divided
        by `count` (default: how many there are) times `scale`: a process of a distributed run
        passes the global count and the number of processes. Returns (p (B,), loss or None)."""
        logits = self.logits(text, image, mask)
        loss = None
        if negative is not None:
            target = (~negative).to(logits.dtype)  # 1 = matched pair, 0 = swapped
            use = torch.ones_like(negative) if use is None else use
            count = use.sum() if count is None else count  # a tensor: no wait for the device
            losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = (losses * use.to(losses.dtype)).sum() * scale / count.clamp(min=1).to(losses.dtype)
        return torch.sigmoid(logits), loss
