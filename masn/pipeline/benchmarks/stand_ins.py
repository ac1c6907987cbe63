"""Stand-in extraction networks: the outputs of ``FeatureNetworks`` without the networks.

The memory benchmark runs them to measure what surrounds the networks (decoding, batching,
writing) on videos far too long for the real networks on a CPU; tests of the extraction run's
bookkeeping use them for the same reason. The "features" are pixel means, not features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from masn.extract.networks.feature_networks import FrameFeatures
from masn.extract.settings import ExtractionConfig
from masn.roles import ROLES


class StandInNetworks(nn.Module):
    """Stand-ins for ``FeatureNetworks``: the same inputs and outputs (shapes, dtypes, boxes
    inside the frame), computed from the pixels at almost no cost."""

    def __init__(self, config: ExtractionConfig, width: int = 2048):
        super().__init__()
        self.config, self.width = config, width
        self.weights = {role: "stand-in (no weights)" for role in ROLES}

    def to_device(self, device: torch.device) -> StandInNetworks:
        return self.to(device)

    @torch.inference_mode()
    def forward(
        self, images: Tensor, scales: Sequence[float], frames: Tensor, clips: Tensor, sizes: Tensor
    ) -> FrameFeatures:
        """Same arguments as ``FeatureNetworks.forward``; one box per frame, the whole frame."""
        batch, boxes = len(images), self.config.detector.boxes
        appearance = (frames.float().mean(dim=(1, 2, 3)) / 255)[:, None].expand(-1, self.width)
        motion = (clips.float().mean(dim=(1, 2, 3, 4)) / 255)[:, None].expand(-1, self.width)
        size = sizes.float()
        whole = torch.stack(
            [size[:, 0] * 0, size[:, 1] * 0, size[:, 0] - 1, size[:, 1] - 1], dim=-1
        ).clamp(min=0)
        labels = torch.zeros(batch, boxes, dtype=torch.int64, device=images.device)
        scores = torch.full((batch, boxes), 0.5, device=images.device)
        return FrameFeatures(
            appearance=appearance.contiguous(),
            appearance_objects=appearance[:, None].expand(-1, boxes, -1).contiguous(),
            motion=motion.contiguous(),
            motion_objects=motion[:, None].expand(-1, boxes, -1).contiguous(),
            boxes=whole[:, None].expand(-1, boxes, -1).contiguous(),
            object_labels=labels,
            object_scores=scores,
            attribute_labels=labels.clone(),
            attribute_scores=scores.clone(),
        )
