"""The motion networks: Kinetics I3D ResNet-50 on 8-frame clips, RoIAligned at the detector's boxes.

The default ("nonlocal") is the video-nonlocal-net "I3D baseline" layout (Tushar-N/pytorch-resnet3d,
which MASN cites): the stem and two temporal max-pools stride time by 8, so one 8-frame 224 x 224
clip gives one 2048 x 7 x 7 map. pytorchvideo's I3D_8x8_R50 ("pytorchvideo"; time stride 2: a
4 x 7 x 7 map) is the alternative. Either map is averaged over time; object motion is pooled from
it at the frame's boxes (:mod:`masn.extract.networks.regions`), global motion is its mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.caller import option
from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.backbones import backbone
from masn.extract.networks.regions import pool_regions

if TYPE_CHECKING:
    from masn.extract.settings import ExtractionConfig

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
NONLOCAL_TIME_STRIDE = 8


class Bottleneck3d(nn.Module):
    """I3D bottleneck: the first 1x1 is inflated to 3x1x1 where ``temporal`` is set; the spatial
    stride sits in the 1x3x3 convolution; batch norms are frozen (inference only)."""

    def __init__(self, inputs: int, width: int, stride: int, temporal: bool):
        super().__init__()
        outputs = 4 * width
        kernel = 3 if temporal else 1
        padding = (kernel // 2, 0, 0)
        self.conv1 = nn.Conv3d(inputs, width, (kernel, 1, 1), padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(
            width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
        )
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(
                nn.Conv3d(inputs, outputs, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(outputs),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


def _stage(inputs: int, width: int, stride: int, temporal: list[int]) -> nn.Sequential:
    blocks = [Bottleneck3d(inputs, width, stride, bool(temporal[0]))]
    blocks += [Bottleneck3d(4 * width, width, 1, bool(t)) for t in temporal[1:]]
    return nn.Sequential(*blocks)


class I3DResNet50(nn.Module):
    """video-nonlocal-net I3D R50 (Kinetics-400 baseline 32x2): clips (B, 3, T, H, W) ->
    (B, 2048, T / 8, H / 32, W / 32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, (5, 7, 7), stride=(2, 2, 2), padding=(2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.layer1 = _stage(64, 64, 1, [1, 1, 1])
        self.layer2 = _stage(256, 128, 2, [1, 0, 1, 0])
        self.layer3 = _stage(512, 256, 2, [1, 0, 1, 0, 1, 0])
        self.layer4 = _stage(1024, 512, 2, [0, 1, 0])

    def forward(self, clips: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(clips)))
        x = F.max_pool3d(x, (2, 3, 3), stride=(2, 2, 2))
        x = F.max_pool3d(self.layer1(x), (2, 1, 1), stride=(2, 1, 1))
        return self.layer4(self.layer3(self.layer2(x)))


def pytorchvideo_i3d_network() -> nn.Module:
    """pytorchvideo's I3D R50 (the I3D_8x8_R50 model-zoo layout) without its head.

    Only pytorchvideo's model builders are imported (its transforms break on current torchvision).
    """
    try:
        from pytorchvideo.models.hub.resnet import i3d_r50
    except ImportError:
        raise MissingInput(
            f"{option('motion', 'pytorchvideo')} needs pytorchvideo: pip install "
            f"'masn[pytorchvideo]', or use {option('motion', 'nonlocal')} (the paper's)"
        ) from None
    network = i3d_r50(pretrained=False)
    network.blocks = network.blocks[:-1]  # drop the classification head
    return network


class MotionFeatures(nn.Module):
    """Clips of uint8 frames + boxes -> (global motion (B, C), object motion (B, N, C)).

    ``network`` maps normalised clips (B, 3, T, H, W) to maps (B, C, T', H / 32, W / 32); C is
    ``channels``.
    """

    def __init__(self, network: nn.Module, channels: int = 2048):
        super().__init__()
        self.network = network
        self.widths = (channels, channels)  # global, objects
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), False)

    def forward(self, clips: Tensor, boxes: Tensor, frame_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """clips (B, T, S, S, 3) uint8 RGB; boxes (B, N, 4) pixels of frames whose original
        (width, height) are ``frame_sizes`` (B, 2)."""
        x = clips.permute(0, 4, 1, 2, 3).float().div_(255.0)
        maps = self.network((x - self.mean) / self.std).float().mean(dim=2)  # B, C, 7, 7
        return maps.mean(dim=(2, 3)), pool_regions(maps, boxes, frame_sizes)


@backbone("nonlocal", role="motion")
def nonlocal_i3d(config: ExtractionConfig) -> MotionFeatures:
    """I3D R50 in the video-nonlocal-net layout (the paper's motion network)."""
    if config.clip_length < NONLOCAL_TIME_STRIDE:
        raise InvalidInput(
            f"{option('clip_length')} must be >= {NONLOCAL_TIME_STRIDE} for the nonlocal I3D "
            f"(it strides time by {NONLOCAL_TIME_STRIDE}), got {config.clip_length}"
        )
    return MotionFeatures(I3DResNet50())


@backbone("pytorchvideo", role="motion")
def pytorchvideo_i3d(config: ExtractionConfig) -> MotionFeatures:
    """pytorchvideo's I3D_8x8_R50 (pip install 'masn[pytorchvideo]')."""
    return MotionFeatures(pytorchvideo_i3d_network())
