"""What defines a set of features: the extraction settings recorded in every store's provenance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from masn.errors import InvalidInput
from masn.extract.networks.detector import DetectorConfig

Precision = Literal["fp32", "bf16"]
MIN_FRAME_SIZE = 32


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
    i3d: Literal["nonlocal", "pytorchvideo"] = "nonlocal"
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
        if self.precision not in ("fp32", "bf16"):
            raise InvalidInput(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
