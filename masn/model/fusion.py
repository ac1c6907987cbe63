"""Motion-appearance fusion (paper eqs. 6-10): three attentions, question-guided mixing, FFN."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from masn.model.masking import masked_softmax


class StdLayerNorm(nn.Module):
    """MCAN's LayerNorm: ``a * (x - mean) / (std + eps) + b`` with the unbiased std.

    It differs from ``nn.LayerNorm`` (which divides by ``sqrt(var + eps)`` with the biased
    variance); the fusion module is specified with this one. Statistics are taken in at least
    float32 so that bf16 autocast does not degrade them.
    """

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: Tensor) -> Tensor:
        exact = x.to(torch.promote_types(x.dtype, torch.float32))
        mean = exact.mean(-1, keepdim=True)
        std = exact.std(-1, keepdim=True)
        return (self.weight * (exact - mean) / (std + self.eps) + self.bias).to(x.dtype)


class FusionAttention(nn.Module):
    """One of the appearance-centred, motion-centred or all-mixed attentions over U.

    Queries are all rows of U; the key set is restricted by the pair mask. Output
    ``Z = LN(U + A (U W_v + b_v))`` with ``A = softmax((U W_q)(U W_k)^T / sqrt(d))``.
    """

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.norm = StdLayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: Tensor, pair_mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = self.query(u) @ self.key(u).transpose(1, 2) / math.sqrt(u.shape[-1])
        attention = self.dropout(masked_softmax(scores, pair_mask))
        mixed = attention.to(u.dtype) @ self.value(u)
        return self.norm(u + mixed), attention


class MotionAppearanceFusion(nn.Module):
    """Fuses U = [H^a; H^m] (N, 2L, d) into O (N, 2L, d), guided by the sentence vector q.

    Each attention t yields Z_t; ``z_t`` sums Z_t over the rows marked in ``summed_rows``;
    ``alpha = softmax_t((W q)(W' z_t)^T / sqrt(d))`` weighs ``S = sum_t alpha_t Z_t``; then
    ``O = LN(S + FFN(S))``. Dropout 0.1 on attention maps, alpha, the FFN input and its hidden.
    """

    def __init__(self, hidden: int, attentions: tuple[str, ...], dropout: float = 0.1):
        super().__init__()
        self.attentions = nn.ModuleDict(
            {name: FusionAttention(hidden, dropout) for name in attentions}
        )
        self.guide_query = nn.Linear(hidden, hidden)
        self.guide_key = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.norm = StdLayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        u: Tensor,
        row_mask: Tensor,
        summed_rows: Tensor,
        sentence: Tensor,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """u (N, 2L, d); row_mask, summed_rows (N, 2L) bool; sentence (N, d).

        Returns O (N, 2L, d), alpha (N, types) and, when asked, each attention map (N, 2L, 2L).
        """
        half = u.shape[1] // 2
        columns = {
            "appearance": torch.arange(2 * half, device=u.device) < half,
            "motion": torch.arange(2 * half, device=u.device) >= half,
        }
        pairs = row_mask.unsqueeze(2) & row_mask.unsqueeze(1)
        fused, maps = [], {}
        for name, attend in self.attentions.items():
            keys = pairs & columns[name] if name in columns else pairs
            z, attention = attend(u, keys)
            fused.append(z)
            if return_attention:
                maps[name] = attention
        fused = torch.stack(fused, dim=1)  # N, types, 2L, d
        summaries = (fused * summed_rows[:, None, :, None]).sum(dim=2)  # N, types, d
        scores = self.guide_key(summaries) @ self.guide_query(sentence).unsqueeze(2)
        alpha = self.dropout(torch.softmax(scores.squeeze(2) / math.sqrt(u.shape[-1]), dim=-1))
        mixed = (fused * alpha.to(fused.dtype)[:, :, None, None]).sum(dim=1)
        return self.norm(mixed + self.ffn(self.dropout(mixed))), alpha, maps
