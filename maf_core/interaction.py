"""CI, cross-modal interaction (paper section 3.3): tokens attend over the 49 image regions; and the
BERT layer it is made of, which UMT's self- and cross-attention layers (maf_core/models/umt.py) use too."""
from __future__ import annotations

import math

import torch
from torch import nn

from maf_core.config import MAFConfig


class BertLayer(nn.Module):
    """One BERT layer, self- or cross-attention (BertLayer / BertCrossAttentionLayer): m-head
    attention of the queries over the keys, output dense, dropout, LayerNorm with the queries
    added back (eq. 7); feed-forward (ReLU or GELU), dropout, LayerNorm with its input added back
    (eq. 8). With `key_dim`, the keys are first projected from that width to d (CI's W_j).

    Masked keys get no weight; a row with every key masked attends evenly (its keys are all
    alike anyway: a missing image's zeroed regions)."""

    def __init__(self, config: MAFConfig, key_dim: int | None = None) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads = config.heads                                   # m
        # parameters are registered in this order (W_j first): an optimizer's state in last.pt is by position
        self.region_projection = nn.Linear(key_dim, d) if key_dim is not None else None  # W_j
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

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # shape: queries (B, Lq, d); keys (B, Lk, d or key_dim); key_mask (B, Lk) bool, None: every key
        if self.region_projection is not None:
            keys = self.region_projection(keys)                     # V = W_j J, shape: (B, Lk, d)
        q, k, v = self._split(self.query(queries)), self._split(self.key(keys)), self._split(self.value(keys))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # shape: (B, m, Lq, Lk)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)                     # alpha, eq. 4
        # shape: (B, m, Lq, d/m) -> (B, Lq, d), eq. 5-6
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(queries.shape)
        mixed = self.attention_norm(queries + self.dropout(self.output(attended)))  # V', eq. 7
        return self.ffn_norm(mixed + self.dropout(self.ffn(mixed))), weights      # C, eq. 8


class CrossModalInteraction(BertLayer):
    """CI: one cross-attention BERT layer, queries T, keys and values V = W_j regions, m heads,
    residual + LayerNorm (eq. 7), FFN + residual + LayerNorm (eq. 8) → C.

    Every token attends over regions only and everything after is per token, so padding
    tokens cannot influence real ones (their own outputs are masked out downstream).
    """

    def __init__(self, config: MAFConfig) -> None:
        super().__init__(config, key_dim=config.image_dim)

    def forward(self, text: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # shape: text T (B, L, d); regions J (B, R, C) -> C (B, L, d), weights (B, m, L, R)
        return super().forward(text, regions)
