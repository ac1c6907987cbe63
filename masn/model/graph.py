"""Object graph (paper eqs. 3-4): a learned adjacency over all objects of all frames, then a GCN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.model.linear import WeightNormLinear
from masn.model.masking import masked_softmax


class ObjectGraph(nn.Module):
    """Relates the K = T x N object nodes of one stream.

    Adjacency: ``A = softmax(temperature * h h^T)`` over valid node pairs, with
    ``h = ReLU(W2 ReLU(W1 x))`` (row-wise weight-normed, one projection for both sides, so A's
    logits are symmetric). GCN: each layer is ``ReLU(LayerNorm(A (x W)))`` with dropout; the output
    is ``LayerNorm(x + last layer)``. Both LayerNorms have no affine parameters.
    """

    def __init__(self, hidden: int, layers: int, temperature: float, dropout: float = 0.1):
        super().__init__()
        self.temperature = temperature
        self.edge_1 = WeightNormLinear(hidden, hidden, bias=False, norm="row")
        self.edge_2 = WeightNormLinear(hidden, hidden, bias=False, norm="row")
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def adjacency(self, nodes: Tensor, node_mask: Tensor) -> Tensor:
        """(B, K, K) row-stochastic over valid pairs; rows of padded nodes are all zero.

        The x100 temperature amplifies any rounding in ``h h^T`` a hundredfold, so these logits
        are always computed in at least float32, also under bf16 autocast.
        """
        h = F.relu(self.edge_2(F.relu(self.edge_1(nodes))))
        exact = torch.promote_types(h.dtype, torch.float32)
        with torch.autocast(h.device.type, enabled=False):
            h = h.to(exact)
            logits = self.temperature * torch.bmm(h, h.transpose(1, 2))
            pairs = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
            return masked_softmax(logits, pairs)

    def forward(self, nodes: Tensor, node_mask: Tensor) -> Tensor:
        """nodes (B, K, d), node_mask (B, K) bool -> graph features (B, K, d)."""
        adjacency = self.adjacency(nodes, node_mask).to(nodes.dtype)
        x = nodes
        for layer in self.layers:
            mixed = torch.bmm(adjacency, layer(x))
            x = self.dropout(F.relu(F.layer_norm(mixed, mixed.shape[-1:])))
        return F.layer_norm(nodes + x, nodes.shape[-1:])
