"""Extraction settings: what defines a set of features, how a run goes, and `masn extract`.

Torch-free, so that the command line can build its flags and help from these dataclasses
without loading the networks. :class:`ExtractionConfig` (with :class:`DetectorConfig`) is what a
feature store records as its provenance; :class:`RunOptions` changes how fast a run goes, never
its features; :class:`ExtractSettings` is the whole `masn extract` command.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from masn.errors import InvalidInput
from masn.extract.networks.backbones import MotionBackbone
from masn.runtime import PRECISIONS, Precision, check_device

Decoder = Literal["pyav", "decord"]
DECODERS: tuple[Decoder, ...] = ("pyav", "decord")
Dataset = Literal["folder", "msvd", "msrvtt", "tgif"]
MIN_FRAME_SIZE = 32


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec (e.g. blocked with None)
        return False


def check_decoder(backend: str) -> None:
    """Refuses an unknown backend, and decord when it is not installed (before any decoding)."""
    if backend not in DECODERS:
        choices = ", ".join(DECODERS)
        raise InvalidInput(f"unknown decoding backend {backend!r}: choose one of {choices}")
    if backend == "decord" and not _installed("decord"):
        raise InvalidInput(
            "the decord backend is not installed: pip install decord==0.6.0 (the masn[decord] "
            "extra), or use the default backend pyav"
        )


@dataclass(frozen=True)
class DetectorConfig:
    """Test-time settings of the bottom-up-attention model (its Caffe test config by default)."""

    min_size: int = 600
    max_size: int = 1000
    pre_nms_top_n: int = 6000
    post_nms_top_n: int = 300
    rpn_nms: float = 0.7
    rpn_min_size: int = 16
    pool_size: int = 14
    class_nms: float = 0.3
    conf_threshold: float = 0.2
    boxes: int = 10

    def __post_init__(self) -> None:
        counts = {
            "min_size": self.min_size,
            "max_size": self.max_size,
            "pre_nms_top_n": self.pre_nms_top_n,
            "proposals (post_nms_top_n)": self.post_nms_top_n,
            "pool_size": self.pool_size,
            "boxes": self.boxes,
        }
        for name, value in counts.items():
            if value != int(value) or value < 1:
                raise InvalidInput(f"detector {name} must be a whole number >= 1, got {value!r}")
        if self.min_size > self.max_size:
            raise InvalidInput(
                f"detector min_size {self.min_size} is larger than max_size {self.max_size}: "
                "the short side cannot exceed the long-side cap"
            )
        if self.rpn_min_size < 0:
            raise InvalidInput(f"rpn_min_size must be >= 0, got {self.rpn_min_size}")
        for name in ("rpn_nms", "class_nms", "conf_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InvalidInput(f"detector {name} must lie in [0, 1], got {value!r}")


@dataclass(frozen=True)
class ExtractionConfig:
    """Defaults reproduce the paper's features (DESIGN.md, "Extraction contract").

    fps: frames decoded per second of video, by presentation time (MASN: 6).
    sample_every: every n-th 6-fps frame is a sampled frame (MASN: 4, about 1.5 per second).
    clip_length: 6-fps frames per I3D clip around a sampled frame, edge-replicated (MASN: 8).
    frame_size: ResNet-152 and I3D see whole frames resized to this square (224).
    i3d: "nonlocal" (video-nonlocal-net layout, time stride 8) or "pytorchvideo" (I3D_8x8_R50).
    precision: "bf16" runs the convolution stacks under bf16 autocast (box choice, RPN and
        class scores stay float32); "fp32" is the fidelity reference.
    feature_dtype: how features are stored.

    Values are checked when the settings are built (``InvalidInput`` says which and why).
    """

    fps: float = 6.0
    sample_every: int = 4
    clip_length: int = 8
    frame_size: int = 224
    i3d: MotionBackbone = "nonlocal"
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    precision: Precision = "fp32"
    feature_dtype: Literal["float16", "float32"] = "float16"

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise InvalidInput(f"fps must be a positive number, got {self.fps!r}")
        for name in ("sample_every", "clip_length"):
            value = getattr(self, name)
            if value != int(value) or value < 1:
                raise InvalidInput(f"{name} must be a whole number >= 1, got {value!r}")
        if self.i3d == "nonlocal" and self.clip_length < 8:
            raise InvalidInput(
                f"clip_length must be >= 8 for the nonlocal I3D (it strides time by 8), got "
                f"{self.clip_length}"
            )
        if self.frame_size != int(self.frame_size) or self.frame_size < MIN_FRAME_SIZE:
            raise InvalidInput(
                f"frame_size must be a whole number >= {MIN_FRAME_SIZE} (one cell of ResNet's "
                f"and I3D's 32-pixel stride), got {self.frame_size!r}"
            )
        if self.feature_dtype not in ("float16", "float32"):
            raise InvalidInput(
                f"feature_dtype must be 'float16' or 'float32', got {self.feature_dtype!r}"
            )
        if self.i3d not in ("nonlocal", "pytorchvideo"):
            raise InvalidInput(f"i3d must be 'nonlocal' or 'pytorchvideo', got {self.i3d!r}")
        if self.precision not in PRECISIONS:
            raise InvalidInput(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """How to run (not recorded in the store: it does not change the features).

    Values are checked when the options are built (``InvalidInput``); whether the device exists
    is checked by ``masn.runtime.resolve_device`` when the run starts.
    """

    device: str = "auto"
    """auto (this rank's GPU if there is one, else the CPU), cpu, cuda or cuda:N."""
    batch_size: int = 8
    """Sampled frames per network batch (frames of several videos share a batch)."""
    workers: int | None = None
    """Decode processes; 0 decodes in the main process (default: the CPU cores of this rank's
    share of the node, at most 8)."""
    decoder: Decoder = "pyav"
    """pyav (reads everything, GIFs included) or decord (pip install 'masn[decord]'; no GIFs)."""
    retry_failed: bool = False
    """Also retry the videos that already failed twice (reruns retry a failed video once, then
    skip it; see OUT.failures.jsonl)."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.batch_size != int(self.batch_size) or self.batch_size < 1:
            raise InvalidInput(f"batch size must be a whole number >= 1, got {self.batch_size!r}")
        if self.workers is not None and (self.workers != int(self.workers) or self.workers < 0):
            raise InvalidInput(
                f"workers must be a whole number >= 0 (0: decode in-process), got {self.workers!r}"
            )
        check_decoder(self.decoder)
