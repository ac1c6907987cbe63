"""One video's network inputs: which 6-fps positions are sampled and which frames make each
sampled frame's clip, on a stand-in 6-fps stream whose frame at position p is all grey 8 * p."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from masn.extract.video import inputs
from masn.extract.video.frames import clip_positions
from masn.extract.video.inputs import FrameInputs, VideoDone, VideoFailed, video_inputs
from masn.extract.video.sources import VideoSource
from tests.builders import TINY_EXTRACTION


class _GreyStream:
    """Stands in for ``VideoStream``: ``<count>.grey`` gives ``count`` frames at 6 fps."""

    def __init__(self, path: Path, fps: float, backend: str):
        self.count = int(Path(path).stem)
        self.width, self.height, self.source_fps = 64, 48, fps
        self.duration = self.count / fps

    def __iter__(self):
        for position in range(self.count):
            yield position / 6, np.full((self.height, self.width, 3), 8 * position, np.uint8)


@pytest.fixture
def grey_streams(monkeypatch):
    monkeypatch.setattr(inputs, "VideoStream", _GreyStream)


def _sampled(count: int, every: int = 4) -> tuple[list[FrameInputs], VideoDone | VideoFailed]:
    config = replace(TINY_EXTRACTION, sample_every=every)
    *frames, end = video_inputs(VideoSource("clip", Path(f"{count}.grey")), config)
    return frames, end


def _positions(frames: list[FrameInputs]) -> list[int]:
    """The 6-fps positions of the sampled frames (their times are position / 6)."""
    return [round(frame.time * 6) for frame in frames]


@pytest.mark.usefixtures("grey_streams")
def test_every_fourth_position_is_sampled_and_all_are_kept():
    for count, expected in ((1, [0]), (4, [0]), (5, [0, 4]), (32, list(range(0, 32, 4)))):
        frames, done = _sampled(count)
        assert _positions(frames) == expected, count
        assert [frame.position for frame in frames] == list(range(len(expected)))
        assert isinstance(done, VideoDone) and (done.sampled, done.frames) == (len(expected), count)
    frames, done = _sampled(3, every=1)
    assert _positions(frames) == [0, 1, 2] and done.sampled == 3


@pytest.mark.usefixtures("grey_streams")
def test_a_stream_without_frames_samples_nothing():
    frames, failed = _sampled(0)
    assert frames == [] and isinstance(failed, VideoFailed)
    assert (failed.stage, failed.reason) == ("decode", "no decodable frames")


@pytest.mark.usefixtures("grey_streams")
def test_clips_are_the_clip_positions_around_each_sampled_frame():
    for count in (1, 5, 13):
        frames, _ = _sampled(count)
        for frame in frames:
            shown = (frame.clip.numpy().reshape(8, -1).mean(axis=1) / 8).round().astype(int)
            wanted = clip_positions(count, round(frame.time * 6), 8)
            assert shown.tolist() == wanted.tolist(), (count, frame.position)
    frames, _ = _sampled(5)
    clips = [(f.clip.numpy().reshape(8, -1).mean(axis=1) / 8).round().tolist() for f in frames]
    assert clips == [[0, 0, 0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 4, 4, 4]]  # edges replicated
