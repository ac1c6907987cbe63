"""Object features pooled from a feature grid at the detector's boxes (RoIAlign).

Every network that gives object features from its own map (I3D's motion map, a ViT's patch
grid) pools them here, so the boxes map onto any grid the same way: pure scaling from the
frame's original pixels to the grid, RoIAlign to a 7 x 7 window, then its mean.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

ROI_OUTPUT = 7


def pool_regions(grid: Tensor, boxes: Tensor, frame_sizes: Tensor) -> Tensor:
    """(B, N, C) object features: the mean of each box's RoIAlign window on ``grid``.

    grid (B, C, H, W) covers whole frames; boxes (B, N, 4) are pixels of frames whose original
    (width, height) are ``frame_sizes`` (B, 2).
    """
    grid = grid.float()
    cells = torch.tensor(grid.shape[-1:-3:-1], device=grid.device, dtype=torch.float32)
    scale = (cells / frame_sizes.to(torch.float32)).repeat(1, 2)  # x, y, x, y
    scaled = boxes.float() * scale.unsqueeze(1)
    batch, objects = boxes.shape[:2]
    index = torch.arange(batch, device=grid.device, dtype=torch.float32)
    rois = torch.cat([index.repeat_interleave(objects).unsqueeze(1), scaled.flatten(0, 1)], 1)
    windows = roi_align(grid, rois, ROI_OUTPUT, sampling_ratio=2, aligned=True)
    return windows.mean(dim=(2, 3)).view(batch, objects, -1)
