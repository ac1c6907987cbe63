"""Attention pooling of the fused rows into one vector (paper eq. 11, MCAN's AttFlat)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from masn.model.masking import masked_softmax


class AttentionPool(nn.Module):
    """``f = W_m sum_i beta_i O_i`` with ``beta = softmax(MLP(O))`` over valid rows.

    The MLP is Linear -> ReLU -> Dropout -> Linear(d -> 1); ``W_m`` is the extra 512 -> 512 merge
    layer of the official code (not in the paper's equation).
    """

    def __init__(self, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.hidden = nn.Linear(hidden, hidden)
        self.score = nn.Linear(hidden, 1)
        self.merge = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, rows: Tensor, row_mask: Tensor) -> Tensor:
        """rows (N, R, d), row_mask (N, R) bool -> pooled (N, d)."""
        scores = self.score(self.dropout(F.relu(self.hidden(rows)))).squeeze(-1)
        beta = masked_softmax(scores, row_mask)
        return self.merge((beta.unsqueeze(-1).to(rows.dtype) * rows).sum(dim=1))
