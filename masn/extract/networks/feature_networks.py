"""The three extraction networks, one per role, run together on batches of sampled frames, and
where their weights come from (the converted published weights, or random ones for smoke runs)."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from masn import caller
from masn.caller import option
from masn.errors import InvalidInput
from masn.extract.networks.backbones import build_backbone
from masn.extract.settings import ExtractionConfig
from masn.extract.store.schema import random_weights_label
from masn.roles import ROLES, Role
from masn.runtime import autocast
from masn.weights.cache import cache_dir
from masn.weights.installed import read_installed

log = logging.getLogger(__name__)

RANDOM_SEED = 0
BANNER_WIDTH = 80
RANDOM_WEIGHTS = "random weights"  # what masn.caller.first_time counts for the banner


def random_weights_banner(cause: str, *more: str) -> str:
    """The warning about features of random networks, boxed: ``cause`` says what made them
    random (what the user did, in their terms), ``more`` adds lines; then what such features
    are worth and how to get the published weights."""
    paragraphs = [
        f"RANDOM WEIGHTS: {cause}.",
        *more,
        "The features are meaningless: use them only for smoke tests and timing.",
        "For real features: `masn weights fetch` (in a checkout: `make weights`).",
    ]
    inner = BANNER_WIDTH - 5
    lines = [line for text in paragraphs for line in textwrap.wrap(text, inner)]
    rule = "#" * BANNER_WIDTH
    return "\n".join(["", rule, *(f"#  {line:<{inner}} #" for line in lines), rule])


def announce_random_weights(cause: str, *more: str) -> None:
    """Logs :func:`random_weights_banner` once per command (in Python: once per process), so a
    command that loads random networks twice, or says why itself first, shows one banner."""
    if caller.first_time(RANDOM_WEIGHTS):
        log.warning(random_weights_banner(cause, *more))


@dataclass
class FrameFeatures:
    """Per sampled frame (B frames, N boxes): every stream of the feature store, as tensors."""

    appearance: Tensor  # B, A
    appearance_objects: Tensor  # B, N, A'
    motion: Tensor  # B, M
    motion_objects: Tensor  # B, N, M'
    boxes: Tensor  # B, N, 4 pixels
    object_labels: Tensor
    object_scores: Tensor
    attribute_labels: Tensor
    attribute_scores: Tensor


class FeatureNetworks(nn.Module):
    """The detector, appearance and motion networks the config chooses; ``weights`` names what
    each was loaded from."""

    def __init__(self, config: ExtractionConfig):
        super().__init__()
        self.config = config
        for role in ROLES:
            self.add_module(role, build_backbone(role, config.backbone(role), config))
        self.weights: dict[str, str] = {}

    @classmethod
    def random(cls, config: ExtractionConfig, seed: int = RANDOM_SEED) -> FeatureNetworks:
        """Randomly initialised networks, identical in every process (same seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            networks = cls(config)
        networks.weights = {role: random_weights_label(seed) for role in ROLES}
        return networks.eval()

    @classmethod
    def load(cls, config: ExtractionConfig, folder: str | Path) -> FeatureNetworks:
        """Networks with the converted published weights installed in ``folder``."""
        networks = cls(config)
        for role in ROLES:
            module = networks.get_submodule(role)
            networks.weights[role] = load_installed(module, role, config.backbone(role), folder)
        return networks.eval()

    @property
    def widths(self) -> dict[str, int]:
        """The width of each feature the networks give, by the store's field names."""
        appearance, appearance_objects = self.appearance.widths
        motion, motion_objects = self.motion.widths
        if appearance_objects is None:  # the detector's region features
            appearance_objects = self.detector.feature_width
        return {
            "appearance": appearance,
            "appearance_objects": appearance_objects,
            "motion": motion,
            "motion_objects": motion_objects,
        }

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
            appearance, objects = self.appearance(frames, detections.boxes, sizes)
            motion, motion_objects = self.motion(clips, detections.boxes, sizes)
        return FrameFeatures(
            appearance=appearance.float(),
            appearance_objects=detections.features if objects is None else objects.float(),
            motion=motion,
            motion_objects=motion_objects,
            boxes=detections.boxes,
            object_labels=detections.object_labels,
            object_scores=detections.object_scores,
            attribute_labels=detections.attribute_labels,
            attribute_scores=detections.attribute_scores,
        )


def feature_widths(config: ExtractionConfig) -> dict[str, int]:
    """The widths of the features ``config``'s networks give, read off networks built on the
    meta device: instant, no memory, no weights."""
    with torch.device("meta"):
        return FeatureNetworks(config).widths


def load_installed(module: nn.Module, role: Role, backbone: str, folder: str | Path) -> str:
    """Loads the converted weights of ``role`` network ``backbone`` installed in ``folder`` into
    ``module`` (strictly) and returns where they came from."""
    state, record = read_installed(Path(folder), role, backbone)
    module.load_state_dict(state, strict=True)
    return record.describe()


def load_networks(
    config: ExtractionConfig,
    weights: str | Path | None,
    random_weights: bool = False,
    seed: int = RANDOM_SEED,
    cause: str = "",
) -> FeatureNetworks:
    """The extraction networks of `masn extract` and `masn answer`: the converted weights
    installed in the folder ``weights`` (None: the weights cache, where `make weights` installs
    them), or with ``random_weights`` random ones (seeded by ``seed``), announced by a banner:
    their features are meaningless. ``cause``: why the networks are random, when the user did
    not ask for it (default: the user's ``random_weights``)."""
    if random_weights:
        if weights is not None:
            raise InvalidInput(
                f"pass either {option('weights')} or {option('random_weights', True)}, not both"
            )
        announce_random_weights(
            cause or f"the networks are randomly initialised ({option('random_weights', True)})"
        )
        return FeatureNetworks.random(config, seed)
    return FeatureNetworks.load(config, cache_dir() if weights is None else weights)
