"""The paper's appearance network: ResNet-152 (torchvision architecture, ImageNet weights) per
sampled frame; its appearance objects are the detector's region features."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torchvision.models import resnet152

from masn.extract.networks.backbones import backbone

if TYPE_CHECKING:
    from masn.extract.settings import ExtractionConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GlobalAppearance(nn.Module):
    """2048-d average-pooled ResNet-152 features of whole frames resized to 224 x 224.

    Takes uint8 RGB frames (B, 224, 224, 3) as the decode workers produce them and normalises
    with the ImageNet statistics here, so every caller feeds the network the same way.
    """

    widths = (2048, None)  # global, objects (the detector's)

    def __init__(self):
        super().__init__()
        # Zero-initialised residual branches keep randomly initialised features finite (150
        # blocks of torchvision's default init overflow float16); real weights replace them.
        self.backbone = resnet152(weights=None, zero_init_residual=True)
        self.backbone.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, frames: Tensor, boxes: Tensor, frame_sizes: Tensor) -> tuple[Tensor, None]:
        """(global (B, 2048), None): the detector's region features are the objects."""
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.backbone(x).float(), None


@backbone("resnet152", role="appearance")
def resnet152_appearance(config: ExtractionConfig) -> GlobalAppearance:
    """ResNet-152 global features; the detector's region features as objects (the paper)."""
    return GlobalAppearance()
