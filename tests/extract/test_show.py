"""The `masn show` figure's layout: balanced rows, no blank margin, box labels on their frames.

What each panel shows (frames, boxes, labels, titles) on a real extraction is tested with the
extraction run (tests/extract/run/test_runner.py); here synthetic 16:9 records, drawn in
milliseconds.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from masn.extract.show import draw, show_figure
from masn.extract.store.schema import VideoRecord
from tests.builders import blank_edges, box_corners, contains, laid_out, read_png

# A box at the frame's top-left corner, one at its top-right corner and one inside.
BOXES = [[0.0, 0.0, 40.0, 30.0], [100.0, 0.0, 128.0, 20.0], [10.0, 40.0, 60.0, 70.0]]


def record_of(count: int) -> tuple[VideoRecord, np.ndarray]:
    """A record of ``count`` sampled 128 x 72 frames with three boxes each, and its frames."""
    rng = np.random.default_rng(count)
    frames = rng.integers(0, 256, size=(count, 72, 128, 3), dtype=np.uint8)
    record = VideoRecord(
        key="clip.mp4",
        boxes=np.tile(np.array(BOXES, dtype=np.float32), (count, 1, 1)),
        frame_times=np.arange(count) * 2.0,
        object_labels=rng.integers(0, 100, size=(count, 3)),
        attribute_labels=rng.integers(0, 100, size=(count, 3)),
        object_scores=rng.random((count, 3)).astype(np.float32),
        width=128,
        height=72,
    )
    return record, frames


@pytest.mark.parametrize(("count", "rows"), [(1, [1]), (3, [3]), (5, [3, 2]), (8, [4, 4])])
def test_rows_are_balanced_and_only_frames_have_axes(count, rows):
    record, frames = record_of(count)
    figure = show_figure(record, frames)
    assert len(figure.axes) == count
    tops = Counter(round(axis.get_position().y1, 3) for axis in figure.axes)
    assert [tops[top] for top in sorted(tops, reverse=True)] == rows
    for index, axis in enumerate(figure.axes):
        np.testing.assert_array_equal(axis.images[0].get_array(), frames[index])
        np.testing.assert_allclose(box_corners(axis), BOXES)


@pytest.mark.parametrize("count", [3, 5, 8])
def test_the_png_has_no_blank_margin(count, tmp_path):
    """Three frames fill one row (not four columns with one empty); the figure's height follows
    the frames' aspect ratio."""
    record, frames = record_of(count)
    image = read_png(draw(record, frames, tmp_path / "show.png"))
    edges = blank_edges(image)
    assert edges["left"] < 0.01 and edges["right"] < 0.01 and edges["top"] < 0.01
    assert edges["bottom"] < 0.03


def test_box_labels_lie_on_their_frames_clear_of_every_title():
    """Labels of boxes at a frame's top edge sit inside the box, not over the frame's time or
    cut at the frame's right edge; nothing leaves the figure."""
    record, frames = record_of(5)
    figure = show_figure(record, frames)
    renderer = laid_out(figure)
    assert contains(figure.bbox_inches, figure.get_tightbbox(renderer), slack=0.01)
    titles = [axis.title.get_window_extent(renderer) for axis in figure.axes]
    titles += [text.get_window_extent(renderer) for text in figure.texts]  # the suptitle
    for axis in figure.axes:
        frame = axis.get_window_extent(renderer)
        assert len(axis.texts) == len(BOXES)
        for label in axis.texts:
            extent = label.get_window_extent(renderer)
            assert contains(frame, extent), label.get_text()
            assert not any(extent.overlaps(title) for title in titles), label.get_text()
