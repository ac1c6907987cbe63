"""`masn show`: a video's sampled frames with their boxes, object labels and attributes."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.settings import check_decoder
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import RANDOM_WEIGHTS_NOTE, VideoRecord
from masn.extract.video.decode import iter_frames

log = logging.getLogger(__name__)

BOX_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
"""Box colours: the Okabe-Ito palette (Color Universal Design, Okabe & Ito 2008), told apart
with every common colour-vision deficiency; its black is left out (boxes on dark frames)."""
# Inches: a frame's width in `masn show`, the room of a frame's 9-point title and of the
# figure's 11-point title (per line) with the layout's pads.
FRAME_WIDTH, FRAME_TITLE_HEIGHT, SUPTITLE_LINE = 4.0, 0.2, 0.2


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
    """A grid of the sampled frames with every box, labelled ``attribute object (score)``; the
    title says RANDOM WEIGHTS when the record's features come from random networks.

    At most ``columns`` frames a row, the rows balanced (5 frames: 3 + 2, not 4 + 1), and the
    figure sized to the frames' aspect ratio, so that it has no blank columns or rows.
    """
    objects, attributes = object_names(), attribute_names()
    rows = math.ceil(len(frames) / columns)
    columns = math.ceil(len(frames) / rows)
    title = f"{record.key}: {len(frames)} sampled frames"
    if record.provenance is not None and record.provenance.random_seed() is not None:
        title = f"{RANDOM_WEIGHTS_NOTE}: boxes and labels of random networks\n{title}"
    aspect = frames.shape[1] / max(frames.shape[2], 1)
    lines = title.count("\n") + 1
    height = rows * (FRAME_WIDTH * aspect + FRAME_TITLE_HEIGHT) + lines * SUPTITLE_LINE
    figure = Figure(figsize=(columns * FRAME_WIDTH, height), layout="constrained")
    figure.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.0, hspace=0.0)
    axes = figure.subplots(rows, columns, squeeze=False).flat
    for index, axis in enumerate(axes):
        if index >= len(frames):
            axis.remove()  # the last row's empty cells
            continue
        axis.axis("off")
        show_frame(axis, frames[index])
        axis.set_title(f"t = {record.frame_times[index]:.2f} s", fontsize=9)
        for n, box in enumerate(record.boxes[index]):
            label = objects[record.object_labels[index, n]]
            attribute = attributes[record.attribute_labels[index, n]]
            score = record.object_scores[index, n]
            draw_box(axis, box, f"{attribute} {label} ({score:.2f})", box_colour(n), lw=1.5)
    figure.suptitle(title, fontsize=11)
    return figure


def show_frame(axis: Axes, frame: np.ndarray) -> None:
    """Shows an (H, W, 3) frame in pixel-edge coordinates (x from 0 to W, y from 0 to H down),
    those of the boxes, so that a box at the frame's border is drawn on it."""
    height, width = frame.shape[:2]
    axis.imshow(frame, extent=(0, width, height, 0))


def box_colour(n: int) -> str:
    """The colour of a frame's ``n``-th box, from a palette that colour-blind readers tell apart."""
    return BOX_COLOURS[n % len(BOX_COLOURS)]


def draw_box(axis: Axes, box: np.ndarray, label: str, colour: str, lw: float = 1.0) -> None:
    """One box rectangle on a frame, with ``label`` (if any) inside it along its top edge.

    Inside, so that a box at the frame's top keeps its label on the frame (not over the title,
    not clipped); anchored at the box's right end when the box starts in the frame's right half,
    so that the label stays on the frame. Empty (padding) and non-finite boxes are skipped.
    """
    x1, y1, x2, y2 = (float(value) for value in box)
    if not np.isfinite([x1, y1, x2, y2]).all() or x2 <= x1 or y2 <= y1:
        return
    axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=lw))
    if not label:
        return
    left_edge, right_edge = sorted(axis.get_xlim())
    right = x1 > (left_edge + right_edge) / 2
    red, green, blue = to_rgb(colour)
    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.6  # perceived brightness
    axis.text(
        min(x2, right_edge) if right else max(x1, left_edge),
        max(y1, min(axis.get_ylim())),
        label,
        color="white" if dark else "black",
        fontsize=6,
        ha="right" if right else "left",
        va="top",
        clip_on=True,
        bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0},
    )


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
