"""Optional input standardisation: each feature dimension to zero mean and unit variance.

Features from networks with random (or poorly matched) weights can vary across videos by a few
per cent of their magnitude; the input projections then see nearly the same vector for every
video. Standardising each dimension with statistics of the training videos (``masn train
--standardize``) makes those differences the signal. The statistics are buffers of the model,
so a checkpoint carries them and evaluation and ``masn answer`` apply exactly what training did.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from masn.model.video import VideoFeatures
from masn.roles import FEATURES

SCALED_FIELDS = FEATURES
"""The VideoFeatures inputs that are standardised (box geometry is already in [0, 1])."""


class FeatureScaling(nn.Module):
    """``(x - mean) / std`` per dimension of each feature input; padded frames stay zero.

    Until :meth:`set_statistics` is called the buffers are the identity (mean 0, std 1).
    """

    def __init__(self, widths: dict[str, int]):
        super().__init__()
        for name in SCALED_FIELDS:
            width = widths[name]
            self.register_buffer(f"{name}_mean", torch.zeros(width))
            self.register_buffer(f"{name}_std", torch.ones(width))

    def set_statistics(self, statistics: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Sets (mean, std) of every field of :data:`SCALED_FIELDS`; std must be positive."""
        missing = sorted(set(SCALED_FIELDS) - set(statistics))
        if missing:
            raise ValueError(f"no statistics for {missing}")
        for name in SCALED_FIELDS:
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in statistics[name])
            current = getattr(self, f"{name}_mean")
            if mean.shape != current.shape or std.shape != current.shape:
                raise ValueError(
                    f"{name}: statistics of shape {tuple(mean.shape)} / {tuple(std.shape)}, "
                    f"expected {tuple(current.shape)}"
                )
            if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
                raise ValueError(f"{name}: standard deviations must be positive, means finite")
            current.copy_(mean)
            getattr(self, f"{name}_std").copy_(std)

    def forward(self, video: VideoFeatures) -> VideoFeatures:
        frames = video.appearance.shape[1]
        steps = torch.arange(frames, device=video.appearance.device)
        valid = steps < video.lengths.to(steps.device).unsqueeze(1)  # B, T
        scaled = {}
        for name in SCALED_FIELDS:
            x = getattr(video, name)
            mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
            mask = valid.view(*valid.shape, *([1] * (x.dim() - 2)))
            scaled[name] = ((x - mean.to(x.dtype)) / std.to(x.dtype)) * mask.to(x.dtype)
        return replace(video, **scaled)
