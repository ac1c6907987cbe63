"""Length masks and masked softmax, shared by every attention in the network."""

from __future__ import annotations

import torch
from torch import Tensor


def length_mask(lengths: Tensor, size: int, *, reference: bool = False) -> Tensor:
    """Boolean mask (..., size) that is True at the first ``lengths`` positions.

    ``reference=True`` reproduces the official code's off-by-one: position ``size - 1`` is
    always masked, so a full-length question or video loses its last element.
    """
    limit = lengths.clamp(max=size - 1) if reference else lengths
    positions = torch.arange(size, device=lengths.device)
    return positions < limit.unsqueeze(-1)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` that gives masked entries exactly zero weight.

    Rows with no valid entry come out all-zero instead of NaN. The result equals the
    official ``softmax(x - 1e10 * (1 - m)) * m``, but it is safe in float16/bfloat16.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask
