"""`masn show`: a video's sampled frames with their boxes, object labels and attributes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from extract.decode import decode_video
from extract.store import FeatureStore, VideoRecord
from extract.vocab import attribute_names, object_names

log = logging.getLogger(__name__)


def find_video(store: FeatureStore, video: str) -> str:
    """The store key of ``video``: a key, or the path of a video the store was made from."""
    if video in store:
        return video
    wanted = Path(video).resolve()
    for key in store:
        if Path(store.read(key, fields=()).path).resolve() == wanted:
            return key
    raise KeyError(f"{video!r} is neither a key of {store.path} nor the path of one of its videos")


def sampled_frames(record: VideoRecord, fps: float, decoder: str = "pyav") -> np.ndarray:
    """Re-decodes the video and returns the frames at the record's sampled times."""
    decoded = decode_video(record.path, fps, decoder)
    index = [int(np.argmin(np.abs(decoded.times - t))) for t in record.frame_times]
    return decoded.frames[index]


def draw(record: VideoRecord, frames: np.ndarray, out: Path, columns: int = 4) -> Path:
    """A grid of the sampled frames with every box, labelled ``attribute object (score)``."""
    objects, attributes = object_names(), attribute_names()
    rows = math.ceil(len(frames) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(frames):
            continue
        axis.imshow(frames[index])
        axis.set_title(f"t = {record.frame_times[index]:.2f} s", fontsize=9)
        for n, (x1, y1, x2, y2) in enumerate(record.boxes[index]):
            colour = colours(n % 10)
            axis.add_patch(
                plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.5)
            )
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
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def show(video: str, store_path: str | Path, out: str | Path, decoder: str = "pyav") -> Path:
    """Draws ``video`` (key or path) from the store at ``store_path`` into the PNG ``out``."""
    with FeatureStore(store_path) as store:
        key = find_video(store, video)
        record = store.read(key)
        fps = store.provenance.config.get("fps", 6.0)
    if record.boxes is None or record.object_labels is None:
        raise ValueError(f"{store_path} has no boxes or labels for {key!r} (imported features?)")
    if not Path(record.path).is_file():
        raise FileNotFoundError(f"the video of {key!r} is no longer at {record.path}")
    path = draw(record, sampled_frames(record, fps, decoder), Path(out))
    log.info("wrote %s", path)
    return path
