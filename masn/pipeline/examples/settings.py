"""The settings of `masn demo` and `masn synergy`, torch-free (the command line builds its
flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from masn.errors import InvalidInput
from masn.runtime import check_device
from masn.settings import Checked, Decided

EPOCHS, QUICK_EPOCHS = 30, 2  # training epochs per question kind of `masn demo` (--quick)


@dataclass(frozen=True)
class DemoSettings(Checked):
    """The whole pipeline on the bundled sample: extract, train, evaluate, answer.

    Renders the sample clips, extracts features of them and of a real video, trains MASN on
    open-ended, count and multiple-choice questions, evaluates it on held-out clips next to a
    baseline without the video, and answers a held-out question with its attention figure.
    Uses the published weights when `masn weights fetch` has installed them, random networks
    (said loudly) otherwise. On a CPU it takes minutes; --quick is a smoke run of about one.
    """

    out: Path = Path("demo")
    """Output folder (a second run reuses what the first finished)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    epochs: Decided[int | None] = None
    """Training epochs per question kind (default: 30, or 2 with --quick)."""
    hidden: int = 64
    """MASN's hidden width."""
    dropout: float = 0.1
    """MASN's dropout probability."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 16
    """Questions per step."""
    frames: int = 5
    """T: sampled frames per video (a 3-second clip has 5)."""
    seed: int = 999
    """Seed of the training runs."""
    quick: bool = False
    """A smoke run of about a minute on a CPU: 33 of the 136 clips, tiny networks (64-pixel
    frames, one box per frame, a sampled frame per 2 s) and 2 epochs per question kind. Every
    stage runs and writes its outputs; the results mean little."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if self.epochs is not None and self.epochs < 1:
            raise InvalidInput(f"--epochs must be at least 1, got {self.epochs}")

    def resolved(self) -> DemoSettings:
        """These settings with every default decided (the epochs of a full or quick run)."""
        if self.epochs is not None:
            return self
        return replace(self, epochs=QUICK_EPOCHS if self.quick else EPOCHS)


@dataclass(frozen=True)
class SynergyShape(Checked):
    """Sizes and signal of the synthetic task (small: the three models train in about 20 s on
    one CPU core)."""

    videos: int = 240
    """Videos, 60/10/30 % train/val/test."""
    frames: int = 4
    """Sampled frames per video."""
    objects: int = 2
    """Objects per frame."""
    dim: int = 32
    """Feature width."""
    noise: float = 1.0
    """Standard deviation of the features' noise."""
    strength: float = 1.5
    """Strength of the planted colour and direction patterns."""


@dataclass(frozen=True)
class SynergySettings(Checked):
    """Synthetic check: appearance-only, motion-only and full MASN on stream-specific questions.

    Plants each video's colour only in appearance features and its direction only in motion
    features, asks one question of each kind per video, trains the three models alike, and
    prints their test accuracy per question type and full MASN's mean fusion alpha per type.
    (At lr 2e-3 the alpha lean flips on some seeds; at 1e-3 it held on all 18 seeds tried.)
    """

    out: Decided[Path | None] = None
    """Folder for the data, the runs and synergy.json (default: a temporary folder)."""
    seed: int = 0
    """Seed of the data and the training."""
    epochs: int = 6
    """Training epochs per model."""
    hidden: int = 64
    """MASN's hidden width."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 16
    """Questions per step."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    shape: SynergyShape = field(default_factory=SynergyShape)

    def check(self) -> None:
        super().check()
        check_device(self.device)
