"""Test videos written with PyAV: flat-grey-coded pictures, GIFs, VFR stamps, audio-only files,
and the odd files users have: rotated phone clips, tiny frames, absurd declared frame rates.

Each picture's left half is a flat grey whose level encodes the source frame index, so a test
can tell which source frame was chosen.

Also the shared builders of feature stores (synthetic and random ``VideoRecord``s, whole stores,
store comparisons), of extraction runs (small settings, stand-in runs, failure logs), of
child processes (``masn`` commands, their environment), of figures (PNG reading, panels) and of
answering (the sample video, small checkpoints of each head).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np
import torch

from masn.datasets import task_spec
from masn.extract.settings import DetectorConfig, ExtractionConfig, RunOptions
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS, REQUIRED_FIELDS, Provenance, VideoRecord
from masn.extract.store.writer import StoreWriter
from masn.extract.video.sources import VideoSource, list_videos
from masn.model import MASN, MASNConfig
from masn.pipeline.examples.demo_sample import SAMPLE_DIR
from masn.pipeline.qa.answer_set import AnswerSet
from masn.pipeline.qa.text import Vocabulary, clean_tokens
from masn.pipeline.training.checkpoint import model_payload, save_atomic
from tests.conftest import REPO

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure

    from masn.extract.networks.feature_networks import FeatureNetworks
    from masn.extract.run.runner import RunSummary

WIDTH, HEIGHT = 160, 120
LEVEL = 8  # grey step per source frame; clips have at most 31 frames


def picture(index: int) -> np.ndarray:
    """RGB frame: grey level LEVEL * index on the left, a red square moving on the right."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:, : WIDTH // 2] = LEVEL * index
    x = WIDTH // 2 + (index * 7) % (WIDTH // 2 - 24)
    image[40:80, x : x + 24] = (230, 30, 30)
    return image


def source_index(frame: np.ndarray) -> int:
    """The source frame a decoded picture came from (inverse of ``picture``)."""
    return round(float(frame[10:-10, 10 : WIDTH // 2 - 10].mean()) / LEVEL)


@dataclass(frozen=True)
class Clip:
    path: Path
    pts: tuple[float, ...]  # seconds of each source frame

    @property
    def duration(self) -> float:
        gaps = np.diff(self.pts)
        return self.pts[-1] + float(np.median(gaps))


def write_clip(
    path: Path,
    codec: str,
    rate: int,
    stamps: list[int],
    container_format: str | None = None,
    options: dict[str, str] | None = None,
    noise: bool = False,
    rotation: int = 0,
) -> Clip:
    """Encode pictures 0.. at pts ``stamps`` (units of 1/rate s); ``rotation``: display matrix
    rotation in degrees counter-clockwise (as a phone records a portrait clip)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=container_format, options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for index, stamp in enumerate(stamps):
            image = picture(index)
            if noise:
                image = rng.integers(0, 256, image.shape, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Clip(path, tuple(stamp / rate for stamp in stamps))


def write_gif(path: Path, count: int, rate: int) -> Clip:
    """A pal8 GIF with a grey palette (index j is grey level j) at ``rate`` frames per second."""
    palette = np.zeros((256, 4), np.uint8)  # ARGB
    palette[:, 0] = 255
    palette[:, 1:] = np.arange(256, dtype=np.uint8)[:, None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "pal8"
        for index in range(count):
            indices = picture(index)[:, :, 0].copy()  # grey stays grey; the square becomes 230
            frame = av.VideoFrame.from_ndarray((indices, palette), format="pal8")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Clip(path, tuple(index / rate for index in range(count)))


def write_audio(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def vfr_stamps(count: int) -> list[int]:
    """Alternating 1/30 s and 1/10 s gaps, in units of 1/90 s."""
    return [0, *np.cumsum([3 if i % 2 == 0 else 9 for i in range(count - 1)]).tolist()]


def write_sized(path: Path, width: int, height: int, count: int = 5, rate: int = 25) -> Path:
    """An H.264 clip of ``count`` pictures scaled to any size (odd and 1-pixel sides too)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for index in range(count):
            image = cv2.resize(picture(index), (width, height), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_absurd_rate_avi(path: Path, count: int = 10) -> Path:
    """An MPEG-4 AVI whose header declares 4e9 frames per second (dwRate / dwScale)."""
    write_clip(path, "mpeg4", 25, list(range(count)))
    data = bytearray(path.read_bytes())
    header = data.find(b"strh")
    # strh: size, fccType, fccHandler, flags, priority + language, initial frames, then scale, rate
    struct.pack_into("<II", data, header + 8 + 4 + 4 + 4 + 4 + 4, 1, 4_000_000_000)
    path.write_bytes(bytes(data))
    return path


def transcode(source: Path, target: Path, codec: str, seconds: float, width: int = 160) -> None:
    """The first ``seconds`` of ``source``, scaled to ``width``, re-encoded with ``codec``."""
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        video = reader.streams.video[0]
        height = round(video.height * width / video.width / 2) * 2
        pixel_format = "rgb8" if codec == "gif" else "yuv420p"
        stream = writer.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for index, frame in enumerate(reader.decode(video)):
            if frame.time > seconds:
                break
            scaled = frame.reformat(width=width, height=height, format=pixel_format)
            scaled.pts, scaled.time_base = index, Fraction(1, 25)
            writer.mux(stream.encode(scaled))
        writer.mux(stream.encode())


# --------------------------------------------------------------------------- feature stores

STORE_CONFIG = {"fps": 6, "sample_every": 4, "detector": {"boxes": 10}}
STORE_WEIGHTS = {"detector": "ab" * 32, "appearance": "random", "motion": "cd" * 32}
# Keys a store must survive: folders, non-ASCII, "%", a hidden name, a name too long for a file.
ODD_KEYS = ["a/b/clip 1.mp4", "über/视频.gif", "100%.webm", ".hidden", "x" * 300 + "/long.mp4"]


def synthetic_record(key: str, frames: int | None = None, full: bool = True) -> VideoRecord:
    """A deterministic record for ``key`` with real MASN widths (10 objects, 2048 channels);
    ``full`` adds pixel boxes, frame times, labels and scores."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    t = frames or int(rng.integers(1, 5))
    width, height = 320, 240
    corners = np.sort(rng.uniform(0, 1, (t, 10, 2, 2)), axis=2) * [width, height]
    boxes = corners.reshape(t, 10, 4).astype(np.float32)
    record = VideoRecord(
        key=key,
        appearance=rng.normal(size=(t, 2048)).astype(np.float32),
        appearance_objects=rng.normal(size=(t, 10, 2048)).astype(np.float32),
        motion=rng.normal(size=(t, 2048)).astype(np.float32),
        motion_objects=rng.normal(size=(t, 10, 2048)).astype(np.float32),
        box_geometry=VideoRecord.geometry_from_boxes(boxes, width, height),
        path=f"/data/{key}",
        width=width,
        height=height,
        source_fps=25.0,
        duration=t * 4 / 6,
        frames=t * 4,
    )
    if full:
        record.boxes = boxes
        record.frame_times = np.arange(t) * 4 / 6
        record.object_labels = rng.integers(0, 1600, (t, 10))
        record.attribute_labels = rng.integers(0, 400, (t, 10))
        record.object_scores = rng.uniform(size=(t, 10)).astype(np.float32)
        record.attribute_scores = rng.uniform(size=(t, 10)).astype(np.float32)
    return record


def random_record(
    key: str,
    frames: int,
    rng: np.random.Generator,
    objects: int = 10,
    appearance: int = 2048,
    motion: int = 2048,
) -> VideoRecord:
    """A record of the five MASN fields drawn from ``rng`` (float64 normal features, uniform
    box geometry), with no metadata: what the official files hold."""
    return VideoRecord(
        key=key,
        appearance=rng.normal(size=(frames, appearance)),
        appearance_objects=rng.normal(size=(frames, objects, appearance)),
        motion=rng.normal(size=(frames, motion)),
        motion_objects=rng.normal(size=(frames, objects, motion)),
        box_geometry=rng.uniform(size=(frames, objects, 6)),
    )


def write_store(
    path: Path,
    videos: Iterable[str | VideoRecord],
    config: dict = STORE_CONFIG,
    weights: dict = STORE_WEIGHTS,
    dtype: str = "float16",
) -> Path:
    """A consolidated store of ``videos`` (a key stands for its ``synthetic_record``)."""
    with StoreWriter(path, config, weights, dtype) as writer:
        for video in videos:
            writer.write(synthetic_record(video) if isinstance(video, str) else video)
        return writer.consolidate()


def damage_store(path: Path, how: str) -> None:
    """Spoils a store file: "truncated" (cut in half), "emptied", or overwritten with text."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:
        path.write_text("notes about the features\n")


def assert_stored(read: VideoRecord, written: VideoRecord, dtype: str = "float16") -> None:
    """``read`` holds what ``written`` held: the features in the store's ``dtype``, the other
    fields exactly, and None where ``written`` had none."""
    for name in FIELDS:
        expected = getattr(written, name)
        if expected is None:
            assert getattr(read, name) is None, name
            continue
        stored = getattr(read, name)
        if name in REQUIRED_FIELDS[:4]:
            assert stored.dtype == np.dtype(dtype), name
            expected = expected.astype(dtype)
        np.testing.assert_array_equal(stored, expected, err_msg=name)


def _store_arrays(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with FeatureStore(path) as store:
        return {key: vars(store.read(key)) for key in store}


def assert_same_stores(first: Path, second: Path, exact: bool = True) -> None:
    """Two stores hold the same videos with the same arrays; with ``exact`` False, float fields
    may differ by rounding (another batch composition), the choices (labels, times) may not."""
    one, two = _store_arrays(first), _store_arrays(second)
    assert one.keys() == two.keys()
    for key in one:
        for name in FIELDS:
            a, b = one[key][name], two[key][name]
            if exact or name in ("object_labels", "attribute_labels", "frame_times"):
                np.testing.assert_array_equal(a, b, err_msg=f"{key} {name}")
            else:  # another batch composition: float rounding differs, the choices do not
                np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3, err_msg=f"{key} {name}")


# --------------------------------------------------------------------------- extraction runs

# Random-weight networks small enough for CPU tests: a 96..160-pixel detector input.
SMALL_EXTRACTION = ExtractionConfig(
    detector=DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12)
)
SMALL_FLAGS = ["--min-size", "96", "--max-size", "160", "--proposals", "12"]
# Tiny networks (32-pixel detector input, 32-pixel frames) where only a run's handling of
# files and failures is tested.
TINY_EXTRACTION = ExtractionConfig(
    frame_size=32, detector=DetectorConfig(min_size=32, max_size=64, post_nms_top_n=4)
)
TINY_FLAGS = ["--frame-size", "32", "--min-size", "32", "--max-size", "64", "--proposals", "4"]
STAND_IN_OPTIONS = RunOptions("cpu", batch_size=4, workers=0)


def stand_in_videos(folder: Path, names: dict[str, str]) -> list[VideoSource]:
    """Short clips in ``folder/videos`` (or text files where the value is 'text'): 'clip' has
    one sampled frame, 'long' four, 'noise' four of random pixels (bright: the others' frames
    are darker)."""
    for name, kind in names.items():
        path = folder / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "text":
            path.write_text("not a video")
        elif kind == "clip":
            write_clip(path, "libx264", 25, list(range(10)))
        else:  # 2.4 s at 10 fps: 15 frames at 6 fps, 4 sampled
            write_clip(path, "libx264", 10, list(range(24)), noise=kind == "noise")
    return list_videos(folder / "videos", "folder")


def bright(frames: np.ndarray | torch.Tensor) -> bool:
    """Whether pixels (numpy or torch) come from a 'noise' stand-in video (mean above 115)."""
    mean = frames.float().mean() if hasattr(frames, "float") else frames.mean()
    return float(mean) > 115


def extract_with_stand_ins(
    sources: list[VideoSource],
    store: Path,
    networks: FeatureNetworks | None = None,
    **options: Any,
) -> RunSummary:
    """``extract_features`` with ``TINY_EXTRACTION`` and ``STAND_IN_OPTIONS`` (overridden by
    ``options``), on ``networks`` or the benchmarks' stand-in networks; returns its summary."""
    from masn.extract.run.runner import extract_features
    from masn.pipeline.benchmarks.stand_ins import StandInNetworks

    networks = networks if networks is not None else StandInNetworks(TINY_EXTRACTION)
    settings = replace(STAND_IN_OPTIONS, **options)
    return extract_features(sources, store, TINY_EXTRACTION, networks, settings)


def failure_entries(store: Path) -> dict[str, dict]:
    """The failure log of ``store`` by key (empty when there is none); asserts one line per
    key."""
    from masn.extract.run.failure_log import failures_path

    path = failures_path(store)
    if not path.exists():
        return {}
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({entry["key"] for entry in entries}) == len(entries)  # one line per key
    return {entry["key"]: entry for entry in entries}


# --------------------------------------------------------------------------- child processes


def child_env() -> dict[str, str]:
    """The environment of child processes: one OpenMP thread each, unbuffered output, no
    progress bars, and this checkout (``tests`` included) importable."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": str(REPO),
    }


def masn_command(*args: str, processes: int = 1) -> list[str]:
    """``python -m masn ARGS``, under ``torch.distributed.run`` when ``processes`` > 1."""
    if processes == 1:
        return [sys.executable, "-m", "masn", *args]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return [sys.executable, *launch, "-m", "masn", *args]


# --------------------------------------------------------------------------- figures


def read_png(path: Path) -> np.ndarray:
    """The pixels of the figure at ``path``, checked: a PNG file, RGB(A), at least 600 x 200
    (one row of three 16:9 frames in `masn show` is about 290 pixels high)."""
    import matplotlib.image

    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 200 and image.shape[1] >= 600
    return image


def titled(figure: Figure, start: str) -> list[Axes]:
    """The axes of ``figure`` whose title begins with ``start``, in drawing order."""
    return [axis for axis in figure.axes if axis.get_title().startswith(start)]


def texts(items: Iterable[Any]) -> list[str]:
    """The strings of matplotlib texts (tick labels, annotations), in order."""
    return [item.get_text() for item in items]


def box_corners(axis: Axes) -> np.ndarray:
    """(x1, y1, x2, y2) of each rectangle drawn on ``axis`` (the boxes on a frame), in order."""
    return np.array(
        [[*p.get_xy(), p.get_x() + p.get_width(), p.get_y() + p.get_height()] for p in axis.patches]
    )


def laid_out(figure: Figure) -> RendererAgg:
    """Draws ``figure`` (its layout done, as when saved) and returns the renderer, for
    ``get_window_extent``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def contains(outer: Any, inner: Any, slack: float = 1.0) -> bool:
    """Whether bbox ``inner`` lies inside ``outer``, give or take ``slack`` (in their units)."""
    return (
        inner.x0 >= outer.x0 - slack
        and inner.x1 <= outer.x1 + slack
        and inner.y0 >= outer.y0 - slack
        and inner.y1 <= outer.y1 + slack
    )


def blank_edges(image: np.ndarray) -> dict[str, float]:
    """The share of the width (left, right) and height (top, bottom) of a rendered figure that
    is blank (all white) at each edge."""
    white = (image[..., :3] > 0.98).all(axis=2)
    columns, rows = white.all(axis=0), white.all(axis=1)

    def run(blank: np.ndarray) -> int:
        return len(blank) if blank.all() else int(np.argmin(blank))

    return {
        "left": run(columns) / len(columns),
        "right": run(columns[::-1]) / len(columns),
        "top": run(rows) / len(rows),
        "bottom": run(rows[::-1]) / len(rows),
    }


# --------------------------------------------------------------------------- answering

SAMPLE_VIDEO = SAMPLE_DIR / "videos" / "bigbuckbunny.mp4"
CITY_VIDEO = Path(__file__).with_name("data") / "cityCC0.mpg"  # MPEG-PS, clock from 0.54 s
# Every 12th 6-fps frame of the sample video, 112-pixel frames: 3 sampled frames.
COARSE_EXTRACTION = replace(SMALL_EXTRACTION, sample_every=12, frame_size=112)
QUESTION = "what is the man doing ?"
ANSWERS = ("run", "jump", "dance")
CANDIDATES = ["run", "jump", "dance"]
CHECKPOINT_FRAMES = 2  # T of the checkpoints: fewer than the video's sampled frames


def make_checkpoint(
    folder: Path,
    head: str,
    frames: int = CHECKPOINT_FRAMES,
    sampling: str = "first",
    width: int = 2048,
    features: Provenance | None = None,
) -> Path:
    """A checkpoint file as ``masn train`` writes it, for a small random MASN with ``head``;
    ``features``: the provenance of the store it was trained on (the checkpoint records it)."""
    torch.manual_seed(0)
    words = [QUESTION, *CANDIDATES] if head == "multiple_choice" else [QUESTION]
    vocabulary = Vocabulary.build(words, clean_tokens)
    answers = AnswerSet(ANSWERS) if head == "open_ended" else None
    config = MASNConfig(
        vocab_size=len(vocabulary),
        task=head,
        num_answers=len(ANSWERS) if head == "open_ended" else 1,
        word_dim=50,
        hidden=32,
        location_dim=16,
        appearance_dim=width,
        motion_dim=width,
    )
    model = MASN(config, word_vectors=torch.randn(len(vocabulary), 50))
    info = (
        {}
        if features is None
        else {"features": {"config": features.config, "weights": features.weights}}
    )
    payload = model_payload(
        model, task_spec("custom", head), vocabulary, answers, "clean", frames, sampling, info
    )
    name = f"{head}-{width}{'-recorded' if features is not None else ''}.pt"
    return save_atomic(payload, folder / name)
