"""VQ interaction (paper eq. 5): a bilinear attention network between graph nodes and words."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.model.linear import WeightNormLinear
from masn.model.masking import masked_softmax


class BilinearAttentionNetwork(nn.Module):
    """Updates word features with ``glimpses`` residual glimpses over (node, word) pairs.

    One low-rank bilinear attention map per glimpse is computed once from the initial words:
    ``logit[h, i, j] = sum_k P[h, k] V'[i, k] Q'[j, k] + c[h]`` with ``V' = ReLU(W_v V)``,
    ``Q' = ReLU(W_q H0)`` (rank ``attention_rank * d``), normalised jointly over all valid pairs.
    Glimpse g pools ``b_g = sum_ij V_g[i] A_g[i, j] Q_g[j]`` and adds ``W_g b_g`` to every word
    row. Dropout (0.2) precedes every layer; 0.5 hits the node side of the attention logits.

    Questions carry a candidate axis C (1 for open-ended and count questions, 5 for multiple
    choice): everything that depends only on the video is computed once and shared by the C
    candidates.
    """

    def __init__(self, hidden: int, glimpses: int, rank: int):
        super().__init__()
        width = hidden * rank
        self.att_nodes = WeightNormLinear(hidden, width)
        self.att_words = WeightNormLinear(hidden, width)
        self.att_weight_v = nn.Parameter(torch.randn(glimpses, width))
        self.att_weight_g = nn.Parameter(self.att_weight_v.detach().norm().clone())
        self.att_bias = nn.Parameter(torch.randn(glimpses))
        self.glimpse_nodes = nn.ModuleList(
            WeightNormLinear(hidden, hidden) for _ in range(glimpses)
        )
        self.glimpse_words = nn.ModuleList(
            WeightNormLinear(hidden, hidden) for _ in range(glimpses)
        )
        self.glimpse_out = nn.ModuleList(WeightNormLinear(hidden, hidden) for _ in range(glimpses))
        self.layer_dropout = nn.Dropout(0.2)
        self.attention_dropout = nn.Dropout(0.5)

    def _fc(self, layer: nn.Module, x: Tensor, relu: bool = True) -> Tensor:
        y = layer(self.layer_dropout(x))
        return F.relu(y) if relu else y

    def attention(
        self, nodes: Tensor, node_mask: Tensor, words: Tensor, word_mask: Tensor
    ) -> Tensor:
        """(B, C, glimpses, K, L) attention; each glimpse sums to one over valid (node, word)."""
        batch, candidates, length, _ = words.shape
        glimpses, width = self.att_weight_v.shape
        nodes_ = self.attention_dropout(self._fc(self.att_nodes, nodes))  # B, K, W
        words_ = self._fc(self.att_words, words)  # B, C, L, W
        weight = self.att_weight_v * (self.att_weight_g / self.att_weight_v.norm())
        scaled = words_.unsqueeze(2) * weight.view(1, 1, glimpses, 1, width)  # B, C, G, L, W
        logits = torch.bmm(nodes_, scaled.reshape(batch, -1, width).transpose(1, 2))
        logits = logits.view(batch, -1, candidates, glimpses, length).permute(0, 2, 3, 1, 4)
        logits = logits + self.att_bias.view(1, 1, glimpses, 1, 1)
        pairs = node_mask[:, None, None, :, None] & word_mask[:, :, None, None, :]
        flat = masked_softmax(logits.flatten(3), pairs.flatten(3))
        return flat.view_as(logits)

    def forward(
        self, nodes: Tensor, node_mask: Tensor, words: Tensor, word_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """nodes (B, K, d), node_mask (B, K), words (B, C, L, d), word_mask (B, C, L) (bool).

        Returns updated words (B, C, L, d) and the attention (B, C, glimpses, K, L).
        """
        batch, candidates, length, hidden = words.shape
        attention = self.attention(nodes, node_mask, words, word_mask)
        for g in range(len(self.glimpse_out)):
            nodes_g = self._fc(self.glimpse_nodes[g], nodes)  # B, K, d
            words_g = self._fc(self.glimpse_words[g], words)  # B, C, L, d
            att = attention[:, :, g].permute(0, 2, 1, 3).reshape(batch, -1, candidates * length)
            pooled = torch.bmm(nodes_g.transpose(1, 2), att.to(nodes_g.dtype))  # B, d, C*L
            pooled = pooled.view(batch, hidden, candidates, length).permute(0, 2, 3, 1)
            joint = (pooled * words_g).sum(dim=2)  # B, C, d
            words = words + self._fc(self.glimpse_out[g], joint, relu=False).unsqueeze(2)
        return words, attention
