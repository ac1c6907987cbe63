"""The three vision networks of extraction, run together on batches of sampled frames."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from masn.errors import InvalidInput
from masn.extract.networks.detector import Detector
from masn.extract.networks.i3d import MotionFeatures
from masn.extract.networks.resnet import GlobalAppearance
from masn.extract.settings import ExtractionConfig
from masn.runtime import autocast
from masn.weights.installed import ROLE_FILES, read_installed

log = logging.getLogger(__name__)

RANDOM_SEED = 0


@dataclass
class FrameFeatures:
    """Per sampled frame (B frames, N boxes): every stream of the feature store, as tensors."""

    appearance: Tensor  # B, 2048
    appearance_objects: Tensor  # B, N, 2048
    motion: Tensor  # B, 2048
    motion_objects: Tensor  # B, N, 2048
    boxes: Tensor  # B, N, 4 pixels
    object_labels: Tensor
    object_scores: Tensor
    attribute_labels: Tensor
    attribute_scores: Tensor


class FeatureNetworks(nn.Module):
    """VG detector + ResNet-152 + I3D; ``weights`` names what each was loaded from."""

    def __init__(self, config: ExtractionConfig):
        super().__init__()
        self.config = config
        self.detector = Detector(config.detector)
        self.appearance = GlobalAppearance()
        self.motion = MotionFeatures(config.i3d)
        self.weights: dict[str, str] = {}

    @classmethod
    def random(cls, config: ExtractionConfig, seed: int = RANDOM_SEED) -> FeatureNetworks:
        """Randomly initialised networks, identical in every process (same seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            networks = cls(config)
        networks.weights = {role: f"random (seed {seed})" for role in ROLE_FILES}
        return networks.eval()

    @classmethod
    def load(cls, config: ExtractionConfig, folder: str | Path) -> FeatureNetworks:
        """Networks with the converted published weights installed in ``folder``."""
        folder = Path(folder)
        networks = cls(config)
        targets = {
            "detector": networks.detector,
            "resnet152": networks.appearance,
            "i3d": networks.motion,
        }
        for role, module in targets.items():
            state, record = read_installed(folder, role)
            if role == "i3d" and record.layout != config.i3d:
                raise InvalidInput(
                    f"the installed I3D ({record.source}) has the {record.layout} layout but "
                    f"--i3d {config.i3d} was asked for: pass --i3d {record.layout} or fetch the "
                    "other I3D"
                )
            module.load_state_dict(state, strict=True)
            networks.weights[role] = record.describe()
        return networks.eval()

    def to_device(self, device: torch.device) -> FeatureNetworks:
        """Moves the networks; on a GPU the 2-D ones also switch to channels_last."""
        self.to(device)
        if device.type == "cuda":
            self.detector.to(memory_format=torch.channels_last)
            self.appearance.to(memory_format=torch.channels_last)
        return self

    @torch.inference_mode()
    def forward(
        self,
        images: Tensor,
        scales: Sequence[float],
        frames: Tensor,
        clips: Tensor,
        sizes: Tensor,
    ) -> FrameFeatures:
        """images (B, 3, H, W) detector inputs of one size; frames (B, S, S, 3) and clips
        (B, L, S, S, 3) uint8; sizes (B, 2) original (width, height)."""
        if images.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, self.config.precision):
            detections = self.detector(images, scales)
            appearance = self.appearance(frames)
            motion, motion_objects = self.motion(clips, detections.boxes, sizes)
        return FrameFeatures(
            appearance=appearance.float(),
            appearance_objects=detections.features,
            motion=motion,
            motion_objects=motion_objects,
            boxes=detections.boxes,
            object_labels=detections.object_labels,
            object_scores=detections.object_scores,
            attribute_labels=detections.attribute_labels,
            attribute_scores=detections.attribute_scores,
        )
