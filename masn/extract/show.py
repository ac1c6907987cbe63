"""`masn show`: a video's sampled frames with their boxes, object labels and attributes."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.settings import check_decoder
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import VideoRecord
from masn.extract.video.decode import iter_frames

log = logging.getLogger(__name__)


def find_video(store: FeatureStore, video: str) -> str:
    """The store key of ``video``: a key, or the path of a video the store was made from."""
    if video in store:
        return video
    wanted = Path(video).resolve()
    for key in store:
        if Path(store.read(key, fields=()).path).resolve() == wanted:
            return key
    raise UnknownName(
        f"{video!r} is neither a key of {store.path} nor the path of one of its videos"
    )


def sampled_frames(record: VideoRecord, fps: float, decoder: str = "pyav") -> np.ndarray:
    """Re-decodes the video and returns the frames at the record's sampled times."""
    return frames_at(record.path, record.frame_times, fps, decoder)


def frames_at(path: str | Path, times: np.ndarray, fps: float, decoder: str) -> np.ndarray:
    """The decoded frames nearest to ``times``, streamed: only those are kept in memory and
    decoding stops after the last."""
    wanted = np.asarray(times, dtype=np.float64)
    kept: list[np.ndarray | None] = [None] * len(wanted)
    gaps = np.full(len(wanted), np.inf)
    with contextlib.closing(iter_frames(path, fps, decoder)) as stream:
        for moment, frame in stream:
            closer = np.abs(wanted - moment) < gaps
            for i in np.flatnonzero(closer):
                kept[i], gaps[i] = frame, abs(wanted[i] - moment)
            if moment > wanted.max():  # later frames lie farther from every wanted time
                break
    if not kept or any(frame is None for frame in kept):
        raise InvalidInput(f"{path} decoded no frames at the sampled times")
    return np.stack(kept)


def show_figure(record: VideoRecord, frames: np.ndarray, columns: int = 4) -> Figure:
    """A grid of the sampled frames with every box, labelled ``attribute object (score)``."""
    objects, attributes = object_names(), attribute_names()
    rows = math.ceil(len(frames) / columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(frames):
            continue
        axis.imshow(frames[index])
        axis.set_title(f"t = {record.frame_times[index]:.2f} s", fontsize=9)
        for n, (x1, y1, x2, y2) in enumerate(record.boxes[index]):
            colour = colours(n % 10)
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.5))
            label = objects[record.object_labels[index, n]]
            attribute = attributes[record.attribute_labels[index, n]]
            score = record.object_scores[index, n]
            axis.text(
                x1,
                y1,
                f"{attribute} {label} ({score:.2f})",
                color="white",
                fontsize=6,
                va="bottom",
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "lw": 0},
            )
    figure.suptitle(f"{record.key}: {len(frames)} sampled frames", fontsize=11)
    figure.tight_layout()
    return figure


def draw(record: VideoRecord, frames: np.ndarray, out: Path, columns: int = 4) -> Path:
    """Writes :func:`show_figure` into the PNG ``out`` (parent folders created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    show_figure(record, frames, columns).savefig(out, dpi=110)
    return out


def show(video: str, store_path: str | Path, out: str | Path, decoder: str = "pyav") -> Path:
    """Draws ``video`` (key or path) from the store at ``store_path`` into the PNG ``out``."""
    check_decoder(decoder)
    with FeatureStore(store_path) as store:
        key = find_video(store, video)
        record = store.read(key)
        fps = store.provenance.config.get("fps", 6.0)
    if record.boxes is None or record.object_labels is None:
        raise InvalidInput(f"{store_path} has no boxes or labels for {key!r} (imported features?)")
    if not Path(record.path).is_file():
        raise MissingInput(f"the video of {key!r} is no longer at {record.path}")
    path = draw(record, sampled_frames(record, fps, decoder), Path(out))
    log.info("wrote %s", path)
    return path
