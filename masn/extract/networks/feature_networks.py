"""The three vision networks of extraction, run together on batches of sampled frames, and where
their weights come from (the converted published weights, or random ones for smoke runs)."""

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
from masn.weights.cache import cache_dir
from masn.weights.installed import ROLE_FILES, read_installed

log = logging.getLogger(__name__)

RANDOM_SEED = 0
RANDOM_WEIGHTS_WARNING = """
################################################################################
#  RANDOM WEIGHTS: the networks are randomly initialised (--random-weights).   #
#  The features are meaningless; use this only for smoke tests and timing.     #
#  For real features run `masn weights fetch` (in a checkout: `make weights`)  #
#  and drop --random-weights.                                                  #
################################################################################"""


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
        networks = cls(config)
        roles = {"detector": networks.detector, "resnet152": networks.appearance}
        for role, module in roles.items():
            networks.weights[role] = load_installed(module, role, Path(folder))
        networks.weights["i3d"] = load_installed(networks.motion, "i3d", Path(folder), config.i3d)
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


def load_installed(module: nn.Module, role: str, folder: Path, backbone: str | None = None) -> str:
    """Loads ``role``'s converted weights installed in ``folder`` into ``module`` (strictly) and
    returns where they came from. ``backbone``: the one ``module`` was built as (the I3D's
    ``--i3d``), which the installed weights must fill."""
    state, record = read_installed(folder, role)
    if backbone is not None and record.layout != backbone:
        raise InvalidInput(
            f"the installed {role} ({record.source}) has the {record.layout} layout but "
            f"--{role} {backbone} was asked for: pass --{role} {record.layout} or fetch the "
            f"other {role}"
        )
    module.load_state_dict(state, strict=True)
    return record.describe()


def load_networks(
    config: ExtractionConfig,
    weights: str | Path | None,
    random_weights: bool = False,
    seed: int = RANDOM_SEED,
) -> FeatureNetworks:
    """The extraction networks of `masn extract` and `masn answer`: the converted weights
    installed in the folder ``weights`` (None: the weights cache, where `make weights` installs
    them), or with ``random_weights`` random ones (seeded by ``seed``), announced by a banner:
    their features are meaningless."""
    if random_weights:
        if weights is not None:
            raise InvalidInput("pass either converted --weights or --random-weights, not both")
        log.warning(RANDOM_WEIGHTS_WARNING)
        return FeatureNetworks.random(config, seed)
    return FeatureNetworks.load(config, cache_dir() if weights is None else weights)
