"""The appearance and motion modules: object nodes -> object graph -> VQ interaction."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from masn.model.ban import BilinearAttentionNetwork
from masn.model.config import MASNConfig
from masn.model.graph import ObjectGraph
from masn.model.linear import DropConnectLinear


class StreamModule(nn.Module):
    """One visual stream (appearance: ResNet + detector features; motion: I3D features).

    Node features (paper eqs. 1-2): ``v_local = W_l [W_o o ; d_s ; d_t]`` per object and
    ``v = W_v [v_local ; W_g g + PE(t)]`` with the frame's global feature g; the K = T x N nodes
    are frame-major. The object graph relates them and the BAN grounds the question words in them.
    """

    def __init__(self, config: MASNConfig, global_dim: int, object_dim: int):
        super().__init__()
        hidden, trainable = config.hidden, not config.reference
        self.object_proj = DropConnectLinear(object_dim, hidden, config.dropout, trainable)
        self.global_proj = DropConnectLinear(global_dim, hidden, config.dropout, trainable)
        self.local_proj = nn.Linear(hidden + 2 * config.location_dim, hidden)
        self.node_proj = nn.Linear(2 * hidden, hidden)
        self.graph = ObjectGraph(hidden, config.graph_layers, config.adjacency_temperature)
        self.interaction = BilinearAttentionNetwork(hidden, config.glimpses, config.attention_rank)

    def nodes(self, frames: Tensor, objects: Tensor, location: Tensor, position: Tensor) -> Tensor:
        """frames (B, T, D), objects (B, T, N, D'), location (B, T, N, 2 * loc), position (T, d).

        Returns node features (B, T * N, d).
        """
        local = self.local_proj(torch.cat([self.object_proj(objects), location], dim=-1))
        glob = self.global_proj(frames) + position.to(local.dtype)
        glob = glob.unsqueeze(2).expand_as(local)
        return self.node_proj(torch.cat([local, glob], dim=-1)).flatten(1, 2)

    def forward(
        self,
        frames: Tensor,
        objects: Tensor,
        location: Tensor,
        position: Tensor,
        node_mask: Tensor,
        words: Tensor,
        word_mask: Tensor,
    ) -> Tensor:
        """Returns the stream's question representation H (B, C, L, d)."""
        graph = self.graph(self.nodes(frames, objects, location, position), node_mask)
        grounded, _ = self.interaction(graph, node_mask, words, word_mask)
        return grounded
