"""CA, cross-modal alignment (paper section 3.2): symmetric in-batch InfoNCE on T_s and V_g."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maf_core.config import MAFConfig
from maf_core.distributed import BatchShard, gather_rows


def projection(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The paper's MLP with one hidden layer and ReLU."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class CrossModalAlignment(nn.Module):
    """Projects the text vector T_s and the pooled image vector V_g, then contrasts them.

    Positives are the pairs of the same tweet, negatives every other pairing in the batch.
    Tweets without a usable image are left out (they would be false pairs).
    """

    def __init__(self, config: MAFConfig) -> None:
        super().__init__()
        self.text_projection = projection(config.hidden_size, config.alignment_hidden, config.hidden_size)
        self.image_projection = projection(config.image_dim, config.alignment_hidden, config.hidden_size)
        self.temperature = config.temperature          # tau
        self.direction = config.alignment_direction    # lambda_c

    def forward(self, text_pooled: torch.Tensor, image_pooled: torch.Tensor, image_ok: torch.Tensor,
                shard: BatchShard | None = None) -> torch.Tensor:
        """The loss over the whole (global, with `shard`) batch; every process computes all of it."""
        # shape: text_pooled (B, d) = T_s; image_pooled (B, C) = V_g; image_ok (B,) bool
        text = gather_rows(self.text_projection(text_pooled), shard)     # T_c, shape: (B_global, d)
        image = gather_rows(self.image_projection(image_pooled), shard)  # V_c, shape: (B_global, d)
        image_ok = gather_rows(image_ok, shard)
        return contrastive_loss(image, text, self.temperature, self.direction, image_ok)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, temperature: float, direction: float,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: mean over pairs of lambda_c * L(V_c -> T_c) + (1 - lambda_c) * L(T_c -> V_c).

    Only the `valid` rows (tweets with an image) take part, as if the others were not in the
    batch; they are masked rather than indexed out, so the device never waits for the host.
    Fewer than 2 valid rows: 0 (nothing to contrast), still attached to the graph.
    """
    if valid is None:
        valid = torch.ones(image.shape[0], dtype=torch.bool, device=image.device)
    # shape: logits (N, N); logits[i, j] = sim(V_c^i, T_c^j) / tau
    logits = (F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T) / temperature
    logits = logits.masked_fill(~(valid[:, None] & valid[None, :]), -1e4)  # invalid pairs out of every sum
    diagonal = logits.diagonal()
    image_to_text = torch.logsumexp(logits, dim=1) - diagonal  # eq. 1, rows: each image against all texts
    text_to_image = torch.logsumexp(logits, dim=0) - diagonal  # eq. 2, columns: each text against all images
    weight = valid.to(logits.dtype)
    count = weight.sum()
    per_pair = direction * image_to_text + (1 - direction) * text_to_image
    return (per_pair * weight).sum() / count.clamp(min=1) * (count >= 2).to(logits.dtype)
