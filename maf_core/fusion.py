"""CF, cross-modal fusion (paper section 3.5): a token-level gate on the retained image part."""
from __future__ import annotations

import torch
from torch import nn

from maf_core.config import MAFConfig


class CrossModalFusion(nn.Module):
    """g = sigmoid(W_gt T + W_gm M) (eq. 13), R = g * M (eq. 14), H = [T; R].

    One bias (eq. 13), or one in each term with `fusion_image_bias` (the released code)."""

    def __init__(self, config: MAFConfig) -> None:
        super().__init__()
        self.text_gate = nn.Linear(config.hidden_size, config.hidden_size)                # W_gt
        self.image_gate = nn.Linear(config.hidden_size, config.hidden_size, bias=config.fusion_image_bias)  # W_gm

    def forward(self, text: torch.Tensor, retained: torch.Tensor) -> torch.Tensor:
        # shape: text T, retained M (B, L, d) -> H (B, L, 2d)
        gate = torch.sigmoid(self.text_gate(text) + self.image_gate(retained))
        return torch.cat([text, gate * retained], dim=-1)
