"""CPU side of extraction: one video's 6-fps stream -> network inputs per sampled frame.

Runs in the decode workers. Memory stays bounded whatever the video length: a sampled frame's
inputs are emitted as soon as the last frame of its clip has been decoded, and only the few
small frames a pending clip still needs are kept. Whatever goes wrong with one video (an
unreadable file, or an unexpected error, logged with its traceback) ends that video with a
``VideoFailed`` naming the stage, so a worker never dies on a video.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from masn.extract.networks.detector import preprocess
from masn.extract.settings import ExtractionConfig
from masn.extract.video.decode import DecodeError, VideoStream
from masn.extract.video.frames import clip_positions
from masn.extract.video.sources import VideoSource

log = logging.getLogger(__name__)

Stage = Literal["decode", "sample", "preprocess", "network", "write"]


@dataclass
class FrameInputs:
    """Everything the networks need for one sampled frame (tensors, so workers share memory).

    detector_image (3, H, W) float32 Caffe input and its scale; frame (S, S, 3) uint8 RGB for
    ResNet-152; clip (L, S, S, 3) uint8 RGB for I3D (S = frame_size, L = clip_length).
    """

    key: str
    position: int
    time: float
    detector_image: Tensor
    scale: float
    frame: Tensor
    clip: Tensor
    width: int
    height: int

    def pin_memory(self) -> FrameInputs:
        """Page-locked copies, so the host-to-GPU copies run asynchronously (DataLoader hook)."""
        return replace(
            self,
            detector_image=self.detector_image.pin_memory(),
            frame=self.frame.pin_memory(),
            clip=self.clip.pin_memory(),
        )


@dataclass
class VideoDone:
    """The end of a video's inputs: how many sampled frames it gave, and its metadata."""

    source: VideoSource
    sampled: int
    frames: int
    width: int
    height: int
    source_fps: float | None
    duration: float


@dataclass
class VideoFailed:
    """A video that could not be extracted; recorded (key, path, stage, reason) and skipped."""

    source: VideoSource
    stage: Stage
    reason: str


def unexpected(error: BaseException) -> str:
    """The failure reason of an error that is not a known problem of the file (a bug?)."""
    return f"unexpected {type(error).__name__}: {error} (see the log for the traceback)"


def _small(frame: np.ndarray, size: int) -> np.ndarray:
    """Whole frame to size x size (INTER_AREA: antialiased when shrinking)."""
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class _Pending:
    """A sampled frame waiting for the rest of its clip to be decoded."""

    position: int  # in the 6-fps stream
    time: float
    image: np.ndarray
    scale: float
    small: np.ndarray


def video_inputs(
    source: VideoSource, config: ExtractionConfig, decoder: str = "pyav"
) -> Iterator[FrameInputs | VideoDone | VideoFailed]:
    """Yields one :class:`FrameInputs` per sampled frame, then :class:`VideoDone`.

    Any failure, possibly after some frames, yields :class:`VideoFailed` instead of
    :class:`VideoDone`; the frames already yielded must then be discarded by the consumer.
    The sampled frames are 6-fps positions 0, E, 2E, ... (E = ``config.sample_every``); the
    clip of a sampled position ``p`` is ``frames.clip_positions`` of ``p`` (edge replication).
    """
    try:
        yield from _inputs(source, config, decoder)
    except DecodeError as error:
        yield VideoFailed(source, "decode", str(error))
    except _StageError as error:
        log.error("%s (%s): %s failed", source.key, source.path, error.stage, exc_info=True)
        yield VideoFailed(source, error.stage, unexpected(error.__cause__ or error))


class _StageError(Exception):
    """An unexpected error, tagged with the stage it happened in (its cause is the error)."""

    def __init__(self, stage: Stage):
        super().__init__(stage)
        self.stage = stage


@contextlib.contextmanager
def _stage(name: Stage) -> Iterator[None]:
    try:
        yield
    except (DecodeError, _StageError):
        raise
    except Exception as error:
        raise _StageError(name) from error


def _inputs(
    source: VideoSource, config: ExtractionConfig, decoder: str
) -> Iterator[FrameInputs | VideoDone]:
    """``video_inputs`` without the failure records: errors are raised, tagged by stage."""
    length, every = config.clip_length, config.sample_every
    after = length - length // 2 - 1  # a clip ends this many positions after its centre
    with _stage("decode"):
        stream = VideoStream(source.path, config.fps, decoder)
        frames = iter(stream)
    window: deque[np.ndarray] = deque(maxlen=length)  # small frames of the last positions
    pending: deque[_Pending] = deque()
    count = 0

    def ready(final: bool) -> list[FrameInputs]:
        inputs = []
        while pending and (final or pending[0].position + after < count):
            frame = pending.popleft()
            first = count - len(window)  # 6-fps position of window[0]
            # Every position of the clip is decoded by now (or past the end: clamped to it).
            wanted = clip_positions(count, frame.position, length)
            clip = np.stack([window[p - first] for p in wanted])
            inputs.append(
                FrameInputs(
                    key=source.key,
                    position=frame.position // every,
                    time=frame.time,
                    detector_image=torch.from_numpy(frame.image),
                    scale=frame.scale,
                    frame=torch.from_numpy(frame.small),
                    clip=torch.from_numpy(clip),
                    width=stream.width,
                    height=stream.height,
                )
            )
        return inputs

    while True:
        with _stage("decode"):
            decoded = next(frames, None)
        if decoded is None:
            break
        time, frame = decoded
        with _stage("preprocess"):
            small = _small(frame, config.frame_size)
            window.append(small)
            if count % every == 0:
                image, scale = preprocess(frame, config.detector)
                pending.append(_Pending(count, time, image, scale, small))
        count += 1
        with _stage("sample"):
            made = ready(final=False)
        yield from made
    with _stage("sample"):
        if count == 0:
            raise DecodeError("no decodable frames")
        made = ready(final=True)
    yield from made
    yield VideoDone(
        source=source,
        sampled=(count + every - 1) // every,
        frames=count,
        width=stream.width,
        height=stream.height,
        source_fps=stream.source_fps,
        duration=stream.duration,
    )
