"""Extraction settings: what defines a set of features, how a run goes, and `masn extract`.

Torch-free, so that the command line builds its flags and help without loading the networks.
:class:`ExtractionConfig` (with :class:`DetectorConfig`) is what a store records as its
provenance; :class:`RunOptions` changes how fast a run goes, never its features. The other
classes are `masn show` and `masn features list|export-official|import-official`.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from tyro.conf import Positional, arg

from masn.datasets import DatasetName, OfficialDataset
from masn.errors import InvalidInput
from masn.extract.networks.backbones import (
    AppearanceBackbone,
    DetectorBackbone,
    MotionBackbone,
)
from masn.roles import Role
from masn.runtime import Precision, check_device
from masn.settings import Checked, Decided

Decoder = Literal["pyav", "decord"]
DECODERS: tuple[Decoder, ...] = ("pyav", "decord")
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
            "the decord backend is not installed: pip install 'masn[decord]' (or pip install "
            "decord==0.6.0), or use the default backend pyav"
        )


@dataclass(frozen=True)
class DetectorConfig(Checked):
    """The detector and its test-time settings (the bottom-up-attention Caffe test config).

    The paper's features use the defaults; smaller sizes and fewer proposals are for quick runs
    on a CPU (most of the detector's work is per proposal).
    """

    network: Annotated[DetectorBackbone, arg(name="detector")] = "vg-frcnn"
    """The detector: vg-frcnn is the bottom-up-attention Faster R-CNN on Visual Genome."""
    min_size: int = 600
    """Detector input: frames resized to this short side."""
    max_size: int = 1000
    """Detector input: long side capped at this."""
    pre_nms_top_n: int = 6000
    """RPN proposals kept before non-maximum suppression."""
    post_nms_top_n: Annotated[int, arg(name="proposals")] = 300
    """RPN proposals kept after non-maximum suppression: the regions classified."""
    rpn_nms: float = 0.7
    """RPN non-maximum suppression IoU threshold."""
    rpn_min_size: int = 16
    """RPN: proposals smaller than this (in original pixels) are dropped."""
    pool_size: int = 14
    """RoI max-pooling output size."""
    class_nms: float = 0.3
    """Per-class non-maximum suppression IoU threshold of the box choice."""
    conf_threshold: float = 0.2
    """Boxes at or above this class score are kept in proposal order when exactly enough."""
    boxes: int = 10
    """Boxes (objects) stored per sampled frame."""

    def check(self) -> None:
        super().check()
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
class ExtractionConfig(Checked):
    """What defines a set of features; the defaults reproduce the paper's."""

    fps: float = 6.0
    """Frames decoded per second of video, chosen by presentation time (MASN: 6)."""
    sample_every: int = 4
    """Every n-th decoded frame is a sampled frame (MASN: 4, about 1.5 per second)."""
    clip_length: int = 8
    """Decoded frames per motion clip around a sampled frame, edge-replicated (MASN: 8)."""
    frame_size: int = 224
    """The appearance and motion networks see whole frames resized to this square."""
    appearance: AppearanceBackbone = "resnet152"
    """The appearance network: resnet152 (the paper; the detector's region features are the
    objects) or clip-vit-b16 (CLIP's image embedding; objects pooled from its patch grid)."""
    motion: MotionBackbone = "nonlocal"
    """The motion network: nonlocal (I3D R50 of video-nonlocal-net, the paper's) or
    pytorchvideo (I3D_8x8_R50; pip install 'masn[pytorchvideo]')."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    precision: Precision = "fp32"
    """bf16 runs the networks under bf16 autocast (box choice, RPN and class scores stay
    float32); fp32 is the fidelity reference."""
    feature_dtype: Literal["float16", "float32"] = "float16"
    """How features are stored."""

    def check(self) -> None:
        super().check()
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise InvalidInput(f"fps must be a positive number, got {self.fps!r}")
        for name in ("sample_every", "clip_length"):
            value = getattr(self, name)
            if value != int(value) or value < 1:
                raise InvalidInput(f"{name} must be a whole number >= 1, got {value!r}")
        if self.frame_size != int(self.frame_size) or self.frame_size < MIN_FRAME_SIZE:
            raise InvalidInput(
                f"frame_size must be a whole number >= {MIN_FRAME_SIZE} (one cell of the "
                f"networks' 32-pixel stride), got {self.frame_size!r}"
            )

    def backbone(self, role: Role) -> str:
        """The network chosen for ``role``."""
        return self.detector.network if role == "detector" else getattr(self, role)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions(Checked):
    """How to run: these change how fast a run goes, never the features (the store does not
    record them)."""

    device: str = "auto"
    """auto (this rank's GPU if there is one, else the CPU), cpu, cuda or cuda:N."""
    batch_size: int = 8
    """Sampled frames per network batch (frames of several videos share a batch)."""
    workers: Decided[int | None] = None
    """Decode processes; 0 decodes in the main process (default: the CPU cores of this rank's
    share of the node, at most 8)."""
    decoder: Decoder = "pyav"
    """pyav (reads everything, GIFs included) or decord (pip install 'masn[decord]'; no GIFs)."""
    retry_failed: bool = False
    """Also retry the videos that already failed twice (reruns retry a failed video once, then
    skip it; see OUT.failures.jsonl)."""

    def check(self) -> None:
        check_decoder(self.decoder)  # says how to install decord, not only the choices
        super().check()
        check_device(self.device)
        if self.batch_size != int(self.batch_size) or self.batch_size < 1:
            raise InvalidInput(f"batch size must be a whole number >= 1, got {self.batch_size!r}")
        if self.workers is not None and (self.workers != int(self.workers) or self.workers < 0):
            raise InvalidInput(
                f"workers must be a whole number >= 0 (0: decode in-process), got {self.workers!r}"
            )


@dataclass(frozen=True)
class ExtractSettings(Checked):
    """Extract detector, ResNet-152 and I3D features of every video under --videos into --out.

    Reruns skip stored videos; videos that fail are recorded once in OUT.failures.jsonl (and
    retried once by the next run). Under torchrun each rank writes a shard and rank 0 merges
    them. The store records these settings.
    """

    out: Path
    """The feature store to write (.h5)."""
    videos: Path | None = None
    """Folder of videos, searched recursively."""
    dataset: DatasetName = "folder"
    """How files are keyed: folder (relative paths), msvd (vidN, through --mapping), msrvtt
    (videoN), nextqa (VidOR ids), tgif (GIF names)."""
    weights: Decided[Path | None] = None
    """Folder of the converted weights (default: the weights cache; `masn weights fetch`)."""
    random_weights: bool = False
    """Random networks, for smoke runs and timing only: the features are meaningless."""
    seed: int = 0
    """Seed of the random networks (--random-weights)."""
    mapping: Decided[Path | None] = None
    """MSVD: youtube_mapping.txt (default: the bundled copy)."""
    merge: tuple[Path, ...] = ()
    """Only join these shard stores into --out."""
    features: ExtractionConfig = field(default_factory=ExtractionConfig)
    run: RunOptions = field(default_factory=RunOptions)

    def check(self) -> None:
        super().check()
        if self.weights is not None and self.random_weights:
            raise InvalidInput("pass either --weights DIR or --random-weights, not both")
        if self.videos is None and not self.merge:
            raise InvalidInput("masn extract needs --videos DIR (or --merge SHARD ... --out STORE)")


@dataclass(frozen=True)
class ShowSettings(Checked):
    """Draw a video's sampled frames with their boxes, object labels and attributes."""

    video: Positional[Annotated[str, arg(metavar="VIDEO")]]
    """The video's key in the store, or its path."""
    features: Path
    """The feature store."""
    out: Path
    """The PNG to write."""
    decoder: Decoder = "pyav"
    """pyav or decord (to decode the frames again)."""


@dataclass(frozen=True)
class ListVideosSettings(Checked):
    """List a feature store's videos: each key and its sampled frames, tab-separated, one a line.

    Streamed from the store's index in one read, so that a store of 100,000 videos lists at
    once (`| head` stops early); keys with tabs or line breaks are printed JSON-quoted.
    """

    store: Positional[Annotated[Path, arg(metavar="STORE")]]
    """The feature store (.h5)."""


@dataclass(frozen=True)
class ExportSettings(Checked):
    """Write a feature store as the official MASN four HDF5 files."""

    features: Path
    """The feature store to export."""
    out: Path
    """Folder for the four official files."""
    dataset: OfficialDataset
    """Official file names and keys: tgif, msvd or msrvtt."""
    key_map: Path | None = None
    """Our key -> official key: a TGIF-QA question file (gif_name -> key) or a two-column TSV."""


@dataclass(frozen=True)
class ImportSettings(Checked):
    """Read the official MASN four HDF5 files (e.g. the authors' released features) into a store."""

    official: Path
    """Folder holding the four official files."""
    out: Path
    """The feature store to write."""
    dataset: OfficialDataset
    """Official file names and keys: tgif, msvd or msrvtt."""
    key_map: Path | None = None
    """Official key -> our key: a TGIF-QA question file (key -> gif_name) or a two-column TSV."""
    skip_incomplete: bool = False
    """Leave out videos missing from some of the four files (instead of stopping)."""
