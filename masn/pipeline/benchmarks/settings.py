"""The settings of `masn bench model|train|extract|memory`, and the cases and shapes they time.

Torch-free, so that the command line can build its flags and help without loading torch.
Targets and the official figures: docs/design.md, "Performance targets".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from masn.errors import InvalidInput
from masn.extract.settings import DetectorConfig
from masn.model.config import Mode, Task
from masn.runtime import Precision, check_device
from masn.settings import Checked, Decided

OFFICIAL_H100_SAMPLES_PER_S = {"frameqa": 477, "count": 486, "action": 54}
TARGET_H100_SAMPLES_PER_S = {"frameqa": 1500, "count": 1500, "action": 600}
# Largest |bf16 - fp32| model output, relative to the largest fp32 output, that bf16 may give.
BF16_TOLERANCE = 0.05


@dataclass(frozen=True)
class BenchCase:
    """One of the paper's training cases: its head, batch size, candidates and answer classes."""

    name: str
    task: Task
    batch: int
    candidates: int = 1
    answers: int = 1


# FrameQA has 1,746 answer classes in TGIF-QA; Action scores 5 candidates per question.
PAPER_CASES = (
    BenchCase("frameqa", "open_ended", 32, answers=1746),
    BenchCase("count", "count", 32),
    BenchCase("action", "multiple_choice", 16, candidates=5),
)
Case = Literal[tuple(case.name for case in PAPER_CASES)]  # type: ignore[valid-type]

# frames, objects per frame, raw feature width, question width (tokens), vocabulary
SHAPES: dict[str, dict[str, int]] = {
    "tgif": {"frames": 20, "objects": 10, "features": 2048, "words": 20, "vocab": 8000},
    "small": {"frames": 8, "objects": 5, "features": 512, "words": 12, "vocab": 2000},
}
Size = Literal[tuple(SHAPES)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class ModelBenchSettings(Checked):
    """Training-step samples/s and peak memory of the model alone (FrameQA 32, Count 32,
    Action 16), on synthetic batches."""

    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    size: Decided[Size | None] = None
    """tgif: T=20, 10 objects, 2048-d (default on GPU); small: reduced (default on CPU)."""
    precision: Decided[Precision | None] = None
    """Default: bf16 autocast on GPU, fp32 on CPU."""
    mode: Mode = "fixed"
    """The network's numerics mode."""
    steps: int = 10
    """Timed training steps per case."""
    warmup: int = 3
    """Untimed steps first."""
    cases: tuple[Case, ...] = ("frameqa", "count", "action")
    """Which of the paper's cases to time."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if self.steps < 1 or self.warmup < 0:
            raise InvalidInput(
                f"--steps must be >= 1, --warmup >= 0; got {self.steps}, {self.warmup}"
            )


@dataclass(frozen=True)
class TrainBenchSettings(Checked):
    """End-to-end training samples/s of the `masn train` loop reading a synthetic float16
    store on disk (loader workers, pinned copies and the training step; validation left out)."""

    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    size: Decided[Size | None] = None
    """tgif: T=20, 10 objects, 2048-d (default on GPU); small: reduced (default on CPU)."""
    precision: Decided[Precision | None] = None
    """Default: bf16 autocast on GPU, fp32 on CPU."""
    steps: Decided[int | None] = None
    """Timed steps per case (default 300 on GPU, 10 on CPU)."""
    warmup: Decided[int | None] = None
    """Untimed steps first (default 30 on GPU, 2 on CPU)."""
    workers: Decided[int | None] = None
    """Loader workers (default: as masn train)."""
    videos: Decided[int | None] = None
    """Videos in the store, 70 % of them train (default 1024 on GPU, 128 on CPU)."""
    cases: tuple[Case, ...] = ("frameqa", "action")
    """Which of the paper's cases to time."""
    cold: bool = False
    """Evict the store from the page cache before timing."""
    dir: Decided[Path | None] = None
    """Where the temporary store goes (default: the system's temporary folder)."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if (self.steps is not None and self.steps < 1) or (self.warmup or 0) < 0:
            raise InvalidInput(
                f"--steps must be >= 1, --warmup >= 0; got {self.steps}, {self.warmup}"
            )


@dataclass(frozen=True)
class DoctorSettings(Checked):
    """Check this install and device, then measure it against the targets (make gpu-check).

    Checks CUDA and bf16 (GPU), torchvision's compiled nms and roi_align, runs the gpu-marked
    tests (in a checkout), then bench model, train and extract: at the paper's sizes in bf16 on a
    GPU, each figure with its target and pass/fail; with small sizes on a CPU (a self-test).
    Prints one JSON and writes it to RESULTS/<date>-<device>.json; exit 1 if a check failed.
    """

    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    results: Path = Path("bench/results")
    """Folder of the JSON records."""
    tests: bool = True
    """Run the gpu-marked tests (needs a checkout and a GPU)."""

    def check(self) -> None:
        super().check()
        check_device(self.device)


# The extraction benchmark's sizes: video count, seconds each, frame (height, width), detector.
BENCH_SIZES: dict[str, dict[str, Any]] = {
    "full": {"videos": 16, "seconds": 10.0, "frame": (360, 640), "detector": DetectorConfig()},
    "small": {
        "videos": 4,
        "seconds": 2.0,
        "frame": (96, 128),
        "detector": DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12),
    },
    "tiny": {  # the CPU self-test of masn doctor: three sampled frames
        "videos": 1,
        "seconds": 2.0,
        "frame": (64, 96),
        "detector": DetectorConfig(min_size=64, max_size=107, post_nms_top_n=4),
    },
}
BenchSize = Literal[tuple(BENCH_SIZES)]  # type: ignore[valid-type]
MEMORY_LIMIT = 1.2  # the longest video's peak memory over the shortest's, at most


@dataclass(frozen=True)
class ExtractBenchSettings(Checked):
    """Extraction sampled frames/s end to end and, in the same run, of the detector alone
    (random weights, generated videos)."""

    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    size: Decided[BenchSize | None] = None
    """full: the Caffe sizes 600/1000 with 300 proposals (default on GPU); small: CPU; tiny:
    one short video (the CPU self-test)."""
    batch_size: int = 8
    """Sampled frames per network batch."""
    workers: int = 2
    """Decode processes."""
    precision: Decided[Precision | None] = None
    """Default: bf16 autocast on GPU, fp32 on CPU."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if self.batch_size < 1 or self.workers < 0:
            raise InvalidInput(
                f"--batch-size must be >= 1, --workers >= 0; got {self.batch_size}, {self.workers}"
            )


@dataclass(frozen=True)
class MemoryBenchSettings(Checked):
    """Extraction peak memory (RSS of the whole process tree) for a short and a long
    generated low-res video; exit 1 if the longest needs more than 1.2 x the shortest."""

    minutes: tuple[float, ...] = (1.0, 30.0)
    """Durations of the generated videos, in minutes."""

    def check(self) -> None:
        super().check()
        if not self.minutes or min(self.minutes) <= 0:
            raise InvalidInput(f"--minutes must be positive durations; got {self.minutes}")
