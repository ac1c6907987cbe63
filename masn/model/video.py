"""The video input of MASN: one batch of padded per-frame features, as every caller builds it.

Its own module so that the network (``masn.py``) and the input standardisation (``scaling.py``)
both import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class VideoFeatures:
    """A batch of videos as MASN consumes them (T sampled frames, N objects per frame).

    appearance (B, T, A): global appearance per sampled frame (ResNet-152 in the paper).
    motion (B, T, M): global motion per sampled frame (I3D in the paper).
    appearance_objects (B, T, N, A'): object appearance (the detector's region features).
    motion_objects (B, T, N, M'): object motion (the I3D map pooled at the same boxes).
    boxes (B, T, N, 6): normalised box geometry.
    lengths (B,) int64: valid frames per video; frames beyond are padding.
    """

    appearance: Tensor
    motion: Tensor
    appearance_objects: Tensor
    motion_objects: Tensor
    boxes: Tensor
    lengths: Tensor

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> VideoFeatures:
        """Moves every tensor to ``device``; floating tensors also to ``dtype``."""
        moved = {}
        for field in fields(self):
            tensor = getattr(self, field.name)
            cast = dtype if dtype is not None and tensor.is_floating_point() else None
            moved[field.name] = tensor.to(device=device, dtype=cast, non_blocking=True)
        return VideoFeatures(**moved)
