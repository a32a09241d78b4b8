"""A linear-chain CRF over words, vectorised over the batch and free of device syncs.

Replaces pytorch-crf 0.7.2, which scores the gold path with a Python loop of indexing ops per
word, checks its mask on the host in every call (a GPU sync) and casts the mask to uint8,
which current torch deprecates. The parameters keep pytorch-crf's names and initialisation
(start_transitions, end_transitions, transitions; uniform in [-0.1, 0.1]), so checkpoints
load either way. Tests compare it with brute-force enumeration of all paths.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class CRF(nn.Module):
    """transitions[a, b] scores tag a followed by tag b; batch first; `mask` (B, W) is a prefix
    of each row. A row without words scores 0 and decodes to []."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                reduction: str = "sum") -> torch.Tensor:
        """Log-likelihood of `tags`: per row ("none"), or its "sum" or "mean" over rows."""
        # shape: emissions (B, W, K); tags, mask (B, W)
        if mask is None:
            mask = torch.ones(tags.shape, dtype=torch.bool, device=tags.device)
        mask = mask.bool()
        llh = self._score(emissions, tags, mask) - self._log_partition(emissions, mask)
        llh = llh * mask[:, 0].to(llh.dtype)  # rows without words contribute nothing
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        raise ValueError(f"reduction {reduction!r}: expected none, sum or mean")

    def _score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weight = mask.to(emissions.dtype)
        emitted = (emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1) * weight).sum(1)
        moved = (self.transitions[tags[:, :-1], tags[:, 1:]] * weight[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return self.start_transitions[tags[:, 0]] + emitted + moved + self.end_transitions[last]

    def _log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # shape: alpha (B, K): log-sum of all paths ending in each tag
        alpha = self.start_transitions + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The best tag path of each row (Viterbi), as many tags as the row has words."""
        batch, words, _ = emissions.shape
        if mask is None:
            mask = torch.ones(batch, words, dtype=torch.bool, device=emissions.device)
        mask = mask.bool()
        # in the wider of the emissions' and the transitions' dtypes: bf16 emissions (autocast) are
        # read in fp32, float64 ones stay float64
        emissions = emissions.to(torch.promote_types(emissions.dtype, self.transitions.dtype))
        score = self.start_transitions + emissions[:, 0]
        pointers = []
        for t in range(1, words):
            # shape: (B, K from, K to)
            candidates = score.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)
            best, pointer = candidates.max(dim=1)
            score = torch.where(mask[:, t].unsqueeze(1), best, score)
            pointers.append(pointer)
        last = (score + self.end_transitions).argmax(1)
        lengths = mask.sum(1)
        # backtrack on the host, all rows at once: a row starts at its last word
        back = torch.stack(pointers, 1).cpu().numpy() if pointers else None
        lengths, last = lengths.cpu().numpy(), last.cpu().numpy()
        paths = np.zeros((batch, words), dtype=np.int64)
        rows = np.arange(batch)
        tag = last.copy()
        for t in range(words - 1, -1, -1):
            tag = np.where(lengths - 1 == t, last, tag)
            paths[:, t] = tag
            if t > 0:
                tag = np.where(t < lengths, back[rows, t - 1, tag], tag)
        return [paths[i, : lengths[i]].tolist() for i in range(batch)]
