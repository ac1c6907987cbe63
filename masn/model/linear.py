"""Two linear-layer variants MASN needs: DropConnect input projections and weight-normed layers."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DropConnectLinear(nn.Module):
    """Bias-free linear layer whose weight entries are dropped (DropConnect) while training.

    These are the four 2048 -> 512 input projections. ``trainable=False`` freezes the weight at
    its random initialisation, which is what the official code does by accident (its weight-drop
    wrapper detaches the weight from the graph); ``reference`` mode needs that to match it.
    """

    def __init__(self, in_features: int, out_features: int, p: float, trainable: bool = True):
        super().__init__()
        self.p = p
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=trainable)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.dropout(self.weight, self.p, self.training))

    def extra_repr(self) -> str:
        rows, cols = self.weight.shape
        return f"{cols} -> {rows}, p={self.p}, trainable={self.weight.requires_grad}"


class WeightNormLinear(nn.Module):
    """Linear layer with weight normalisation, ``W = g * v / ||v||``.

    ``norm="tensor"`` uses one norm for the whole matrix (a scalar ``g``, as BAN does);
    ``norm="row"`` one norm per output row (``g`` of shape (out, 1), as the adjacency learner
    does). Parameters are named ``weight_g`` / ``weight_v`` like torch's weight_norm.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        norm: Literal["tensor", "row"] = "tensor",
    ):
        super().__init__()
        self.norm = norm
        plain = nn.Linear(in_features, out_features, bias=bias)
        self.weight_v = nn.Parameter(plain.weight.detach().clone())
        self.weight_g = nn.Parameter(self._norm_of(self.weight_v).detach().clone())
        self.bias = nn.Parameter(plain.bias.detach().clone()) if bias else None

    def _norm_of(self, v: Tensor) -> Tensor:
        return v.norm() if self.norm == "tensor" else v.norm(dim=1, keepdim=True)

    @property
    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self._norm_of(self.weight_v))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        rows, cols = self.weight_v.shape
        return f"{cols} -> {rows}, bias={self.bias is not None}, norm={self.norm}"
