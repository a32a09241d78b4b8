"""CI, cross-modal interaction (paper section 3.3): tokens attend over the 49 image regions."""
from __future__ import annotations

import math

import torch
from torch import nn

from maf_core.config import MAFConfig


class CrossModalInteraction(nn.Module):
    """One cross-attention block: queries T, keys and values V = W_j regions, m heads,
    residual + LayerNorm (eq. 7), FFN + residual + LayerNorm (eq. 8) → C.

    Every token attends over regions only and everything after is per token, so padding
    tokens cannot influence real ones (their own outputs are masked out downstream).
    """

    def __init__(self, config: MAFConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads = config.heads                                   # m
        self.region_projection = nn.Linear(config.image_dim, d)     # W_j
        self.query = nn.Linear(d, d)                                # W_q for all heads
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)                               # W'
        self.attention_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        activation = nn.GELU() if config.interaction_activation == "gelu" else nn.ReLU()  # GELU: erf form, as BERT's
        self.ffn = nn.Sequential(nn.Linear(d, config.interaction_ffn), activation, nn.Linear(config.interaction_ffn, d))
        self.ffn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        # shape: (B, n, d) -> (B, m, n, d/m)
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, text: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # shape: text T (B, L, d); regions J (B, R, C) -> V (B, R, d)
        regions = self.region_projection(regions)
        q, k, v = self._split(self.query(text)), self._split(self.key(regions)), self._split(self.value(regions))
        # shape: weights alpha (B, m, L, R), eq. 4
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        # shape: (B, m, L, d/m) -> (B, L, d), eq. 5-6
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(text.shape)
        mixed = self.attention_norm(text + self.dropout(self.output(attended)))     # V', eq. 7
        fused = self.ffn_norm(mixed + self.dropout(self.ffn(mixed)))                # C, eq. 8
        return fused, weights
