"""Configuration of the MASN network: one dataclass whose defaults reproduce the paper's setup."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from masn.roles import FEATURES

Mode = Literal["fixed", "reference"]
Task = Literal["count", "open_ended", "multiple_choice"]
Streams = Literal["both", "appearance", "motion"]
Fusion = Literal["full", "dual", "single", "none"]

# Which fusion attentions (paper eqs. 6-8) each `fusion` setting keeps, in alpha order.
FUSION_ATTENTIONS: dict[str, tuple[str, ...]] = {
    "full": ("appearance", "motion", "all"),
    "dual": ("appearance", "motion"),
    "single": ("all",),
    "none": (),
}


@dataclass(frozen=True)
class MASNConfig:
    """Everything that shapes a MASN network.

    mode:
        ``fixed`` (default) repairs the official code's defects: trainable input projections,
        correct length masks, masked sums in the fusion module (so a sample never depends on its
        batch partners). ``reference`` reproduces the official implementation exactly, quirks
        included, which is what makes the authors' checkpoints importable.
    task:
        ``count`` (regression), ``open_ended`` (``num_answers`` classes) or ``multiple_choice``
        (one score per candidate; questions arrive as (B, candidates, words)).
    streams / fusion (Table 3 ablations):
        ``streams`` keeps both modules or only the appearance / motion one. ``fusion`` keeps all
        three fusion attentions (``full``), only the appearance- and motion-centred ones
        (``dual``), only the all-mixed one (``single``), or skips the fusion module (``none``:
        the concatenated module outputs go straight to attention pooling). A single stream
        always skips the fusion module, which needs both.
    standardize:
        Standardise each feature dimension with training-set statistics held as buffers
        (:mod:`masn.model.scaling`; ``masn train --standardize`` sets them). Off by default: the
        paper's network reads the features as they are.
    appearance_dim ... motion_objects_dim:
        The widths of the four feature inputs, as the feature store records them (the paper's
        ResNet-152, detector and I3D features are all 2048 wide); object widths default to their
        stream's global width.
    """

    vocab_size: int
    task: Task = "open_ended"
    num_answers: int = 1
    mode: Mode = "fixed"
    word_dim: int = 300
    hidden: int = 512
    appearance_dim: int = 2048
    appearance_objects_dim: int | None = None
    motion_dim: int = 2048
    motion_objects_dim: int | None = None
    location_dim: int = 64
    dropout: float = 0.3
    graph_layers: int = 3
    adjacency_temperature: float = 100.0
    glimpses: int = 4
    attention_rank: int = 3
    streams: Streams = "both"
    fusion: Fusion = "full"
    standardize: bool = False

    def __post_init__(self) -> None:
        for stream in ("appearance", "motion"):
            if getattr(self, f"{stream}_objects_dim") is None:
                object.__setattr__(self, f"{stream}_objects_dim", getattr(self, f"{stream}_dim"))
        _check_choice("task", self.task, ("count", "open_ended", "multiple_choice"))
        _check_choice("mode", self.mode, ("fixed", "reference"))
        _check_choice("streams", self.streams, ("both", "appearance", "motion"))
        _check_choice("fusion", self.fusion, tuple(FUSION_ATTENTIONS))
        if self.vocab_size < 2:
            raise ValueError(
                f"vocab_size must be at least 2 (padding and UNK), got {self.vocab_size}"
            )
        if self.task == "open_ended" and self.num_answers < 2:
            raise ValueError(f"an open-ended head needs num_answers >= 2, got {self.num_answers}")
        if self.hidden % 2:
            raise ValueError(f"hidden must be even (sinusoidal codes), got {self.hidden}")

    @property
    def fusion_attentions(self) -> tuple[str, ...]:
        """Fusion attentions in use; empty when the fusion module is skipped."""
        if self.streams != "both":
            return ()
        return FUSION_ATTENTIONS[self.fusion]

    @property
    def reference(self) -> bool:
        return self.mode == "reference"

    @property
    def widths(self) -> dict[str, int]:
        """The width of each feature input, by the feature store's field names."""
        return {name: getattr(self, f"{name}_dim") for name in FEATURES}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MASNConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MASN config fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
