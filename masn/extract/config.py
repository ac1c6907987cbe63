"""What defines a set of features: the extraction settings recorded in every store's provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from masn.errors import InvalidInput
from masn.extract.detector import DetectorConfig

Precision = Literal["fp32", "bf16"]


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
        if self.fps <= 0 or self.sample_every < 1 or self.clip_length < 1:
            raise InvalidInput(f"invalid sampling settings in {self}")
        if self.i3d not in ("nonlocal", "pytorchvideo"):
            raise InvalidInput(f"i3d must be 'nonlocal' or 'pytorchvideo', got {self.i3d!r}")
        if self.precision not in ("fp32", "bf16"):
            raise InvalidInput(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
