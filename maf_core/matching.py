"""CM, cross-modal matching (paper section 3.4): is this image related to this text? p in [0, 1]."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maf_core.config import MAFConfig


def choose_negatives(image_ok: torch.Tensor, pairs: int, mode: str,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows swap their C with which: (permutation (B,), is_negative (B,) bool).

    pairs: k random pairs among the rows with an image (the paper, k = 15 of 64); k shrinks
    to fit a small batch, always leaving at least one positive, and with fewer than 3 usable
    rows nothing is swapped.
    tail: the released code's rule: when more than 2k rows have an image, the last 2k of them,
    the first half swapping with the second (its last 16 rows of a batch of more than 16);
    otherwise none. Rows come in random order (maf_core/data.py), so which tweets are last
    does not depend on their length or on anything else about them.
    """
    rows = torch.nonzero(image_ok, as_tuple=False).flatten()
    if mode == "tail":
        k = pairs if len(rows) > 2 * pairs else 0
    else:
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
    """A linear classifier on flatten([T; C]) over `max_length` positions (eq. 9-10), or a
    bilinear score of mean T and mean C (`matching_head = "bilinear"`).

    Linear, `matching_positions = "real"`: T is masked by its tweet's pieces and C by the
    pieces of the tweet it was made with, zero beyond, so p does not depend on padding and a
    swapped C^b brings no trace of b's length. `"all"`: every position unmasked, as the
    released code feeds its 128 padded positions (the caller pads to max_length).

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
        self.all_positions = config.matching_positions == "all"
        if self.head == "bilinear":
            self.classifier = nn.Bilinear(config.hidden_size, config.hidden_size, 1)
            nn.init.zeros_(self.classifier.weight)  # p = 0.5 at the start; the default init gives |logit| ~ sqrt(d)
        else:  # W_f; two outputs and a softmax in the released code (p = softmax[1] = sigmoid(l1 - l0))
            self.classifier = nn.Linear(config.max_length * 2 * config.hidden_size, config.matching_outputs)

    def logits(self, text: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
               image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """shape: text T, image C (B, L, d); mask (B, L) of T's tweet; image_mask (B, L) of the
        tweet C was made with (default: mask) -> (B,)"""
        image_mask = mask if image_mask is None else image_mask
        if self.head == "bilinear":  # mean over the real pieces of each side, then t^T W c + b
            return self.classifier(_mean(text, mask), _mean(image, image_mask)).squeeze(-1)
        if self.all_positions:
            pair = torch.cat([text, image], dim=-1)
        else:  # padding rows -> 0, each half by its own tweet
            pair = torch.cat(
                [text * mask.unsqueeze(-1).to(text.dtype), image * image_mask.unsqueeze(-1).to(image.dtype)], dim=-1
            )
        length = pair.shape[1]
        if length > self.max_length:  # allowed while only padding lies beyond max_length
            if mask[:, self.max_length:].any():
                longest = int(mask.sum(1).max())
                raise ValueError(f"a sequence of {longest} pieces is longer than the CM max_length {self.max_length}")
            pair = pair[:, : self.max_length]
        pair = F.pad(pair, (0, 0, 0, self.max_length - pair.shape[1]))   # shape: (B, max_length, 2d)
        out = self.classifier(pair.flatten(1))
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out.squeeze(-1)

    def forward(self, text: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                negative: torch.Tensor | None = None, use: torch.Tensor | None = None,
                count: torch.Tensor | None = None, scale: float = 1.0, image_mask: torch.Tensor | None = None):
        """p for the pairs (T_i, image_i) and, when `negative` is given, the BCE loss (eq. 11)
        over the rows in `use` (those with an image). The loss is a sum over those rows divided
        by `count` (default: how many there are) times `scale`: a process of a distributed run
        passes the global count and the number of processes. Returns (p (B,), loss or None)."""
        logits = self.logits(text, image, mask, image_mask)
        loss = None
        if negative is not None:
            target = (~negative).to(logits.dtype)  # 1 = matched pair, 0 = swapped
            use = torch.ones_like(negative) if use is None else use
            count = use.sum() if count is None else count  # a tensor: no wait for the device
            losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = (losses * use.to(losses.dtype)).sum() * scale / count.clamp(min=1).to(losses.dtype)
        return torch.sigmoid(logits), loss


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # shape: x (B, L, d), mask (B, L) -> (B, d), the mean over the real pieces
    weight = mask.unsqueeze(-1).to(x.dtype)
    return (x * weight).sum(1) / weight.sum(1).clamp(min=1)
