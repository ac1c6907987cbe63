"""Decode a video file into its 6-fps stream of RGB frames (see ``extract.frames`` for the choice).

Two backends: "pyav" (default; PyAV bundles FFmpeg and reads GIF, mp4, avi, webm, mpg, mkv,
mov...) decodes once and keeps only the chosen frames; "decord" (optional, ``decord==0.6.0``)
reads the frame timestamps, then fetches the chosen frames. Both pick the same frames.

Times are seconds from the first frame of the video stream (like ffmpeg, which drops the start
offset of MPEG-PS/TS files), so the 6-fps grid starts at the first picture. Frames come upright
as players show them: the display matrix (phone rotation metadata) of the first frame turns
every frame by its multiple of 90 degrees, and width and height are those after turning. Every
failure to read a file raises ``DecodeError`` with a short reason, for the run's failure
records.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from masn.errors import InvalidInput, MissingInput
from masn.extract.settings import check_decoder
from masn.extract.video.frames import TIME_TOLERANCE, FrameSelector, end_time, select_frames

log = logging.getLogger(__name__)

_DECORD_CHUNK = 32  # frames fetched per decord get_batch call while streaming


class DecodeError(Exception):
    """A video that cannot be decoded; the message is a short reason for the failure record."""


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0-3) that show a frame upright, from its display
    rotation in degrees (PyAV's ``VideoFrame.rotation``; rounded to a multiple of 90)."""
    return round(rotation / 90) % 4


def upright(frame: np.ndarray, turns: int) -> np.ndarray:
    """The (H, W, 3) frame turned ``turns`` quarter turns counter-clockwise (contiguous)."""
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


@dataclass
class DecodedVideo:
    """The 6-fps stream of one video.

    ``duration`` is the end of the last source frame's presentation (last pts plus the median
    frame interval); when ``max_frames`` stopped decoding early, the start of the source frame
    after the last kept one.
    """

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: np.ndarray  # (N,) float64 seconds from the first frame, strictly increasing
    width: int
    height: int
    source_fps: float | None  # average frame rate declared by the container
    duration: float
    backend: str


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of a video, read without decoding it (values may be estimates)."""

    width: int
    height: int
    source_fps: float | None
    duration: float | None  # seconds, as declared by the container
    frame_count: int | None  # as declared by the container
    codec: str
    container: str


@dataclass
class _Progress:
    """What a decode learns besides the frames, filled in while it runs."""

    width: int = 0
    height: int = 0
    source_fps: float | None = None
    duration: float = 0.0


_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def unreadable(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a video file, in words; None for a readable regular file
    (which may still be empty or no video)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return f"no such file: {path}"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link that loops (it points back at itself)"
        return f"cannot read it: {error.strerror or error}"
    if not stat.S_ISREG(mode):
        return f"not a regular file but {_KINDS.get(stat.S_IFMT(mode), 'a special file')}"
    if not os.access(path, os.R_OK):
        return "cannot read it: permission denied"
    return None


def check_video_file(path: str | os.PathLike[str]) -> None:
    """Refuses a video path that is absent (``MissingInput``) or that is not a readable regular
    file (``InvalidInput`` saying what it is: a named pipe, a device, a looping link...)."""
    problem = unreadable(path)
    if problem is None:
        return
    if not os.path.lexists(path):
        raise MissingInput(f"no video at {path}")
    raise InvalidInput(f"cannot read the video {path}: {problem}")


def _check_file(path: Path) -> None:
    problem = unreadable(path)
    if problem is not None:
        raise DecodeError(problem)
    if path.stat().st_size == 0:
        raise DecodeError("empty file")


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    return error.strerror or str(error)


def _open(path: Path) -> av.container.InputContainer:
    """Open with PyAV; classify the failures that happen before any frame is decoded."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except PermissionError as error:  # av.error.PermissionError: unreadable, whatever it holds
        raise DecodeError(f"cannot read it: {_ffmpeg_reason(error)}") from error
    except av.FFmpegError as error:
        raise DecodeError(f"not a video: {_ffmpeg_reason(error)}") from error
    if not container.streams.video:
        container.close()
        raise DecodeError("no video stream")
    return container


def _rate(rate: Fraction | None) -> float | None:
    return float(rate) if rate else None


def probe(path: str | Path) -> VideoInfo:
    """Container metadata of the first video stream, without decoding any frame."""
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            source_fps=_rate(stream.average_rate),
            duration=duration,
            frame_count=stream.frames or None,
            codec=stream.codec_context.name,
            container=container.format.name,
        )


class _Clock:
    """Seconds since the first frame, from each frame's pts (else its packet's dts).

    Frames with neither (raw streams such as .h264) follow the previous frame by one nominal
    frame interval, as ffmpeg does.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        self.time_base = stream.time_base
        self.rate = stream.average_rate or stream.guessed_rate
        self.origin: int | None = None
        self.anchor = Fraction(0)  # time of the last stamped frame
        self.steps = -1  # unstamped frames since then

    def __call__(self, frame: av.VideoFrame) -> float:
        stamp = frame.pts if frame.pts is not None else frame.dts
        if stamp is not None:
            if self.origin is None:
                self.origin = stamp
            self.anchor, self.steps = (stamp - self.origin) * self.time_base, 0
        elif self.rate:
            self.steps += 1
        else:
            raise DecodeError("truncated or corrupt: frames carry no timestamps and no frame rate")
        offset = self.steps / self.rate if self.steps else 0
        return float(self.anchor + offset)


def _iter_pyav(path: Path, fps: float, progress: _Progress) -> Iterator[tuple[float, np.ndarray]]:
    """Decode once (frame threading on); only kept frames are converted to RGB and held."""
    container = _open(path)
    selector: FrameSelector[tuple[float, av.VideoFrame]] = FrameSelector(fps)
    finished = False
    coded = (0, 0)  # width, height of the first frame as stored
    turns = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        progress.source_fps = _rate(stream.average_rate)
        clock = _Clock(stream)
        backwards = 0
        last_packet_corrupt = False

        def rgb(frame: av.VideoFrame) -> np.ndarray:
            # A mid-stream size change is scaled back to the first frame's size.
            image = frame.to_ndarray(format="rgb24", width=coded[0], height=coded[1])
            return upright(image, turns)

        try:
            for packet in container.demux(stream):
                if packet.size:
                    last_packet_corrupt = packet.is_corrupt
                for frame in packet.decode():
                    if not coded[0]:
                        coded, turns = (frame.width, frame.height), quarter_turns(frame.rotation)
                        progress.width, progress.height = coded[:: -1 if turns % 2 else 1]
                    time = clock(frame)
                    latest = selector.last_pts
                    if latest is not None and time < latest:
                        backwards += 1
                        continue
                    for kept_time, kept in selector.push(time, (time, frame)):
                        yield kept_time, rgb(kept)
        except av.FFmpegError as error:
            raise DecodeError(f"truncated or corrupt: {_ffmpeg_reason(error)}") from error
        if selector.last_pts is None:
            raise DecodeError("no decodable frames")
        if last_packet_corrupt:
            raise DecodeError("truncated or corrupt: the file ends inside a packet")
        if backwards:
            log.warning("%s: dropped %d frames whose timestamps go backwards", path, backwards)
        last = selector.finish()
        progress.duration = selector.end
        finished = True
        for kept_time, kept in last:
            yield kept_time, rgb(kept)
    finally:
        if not finished and selector.last_pts is not None:
            progress.duration = selector.last_pts
        container.close()


def _import_decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError(
            "the decord backend needs decord: pip install 'masn[decord]' (or pip install "
            "decord==0.6.0), "
            "or use the default backend 'pyav'"
        ) from error
    return decord


def _decord_reason(error: Exception) -> str:
    """decord's message without its "[time] source.cc:line: " prefix and C++ stack trace."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", first)


def _iter_decord(
    path: Path, fps: float, progress: _Progress, max_frames: int | None
) -> Iterator[tuple[float, np.ndarray]]:
    """Read all timestamps, choose with ``select_frames``, fetch only the chosen frames."""
    decord = _import_decord()
    refusal = "decord cannot read GIF files: use the pyav backend for GIFs"
    if path.suffix.lower() == ".gif":
        raise DecodeError(refusal)
    info = probe(path)  # same classification of unreadable files as the pyav backend
    if info.container == "gif":
        raise DecodeError(refusal)
    progress.source_fps = info.source_fps
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    except decord.DECORDError as error:
        raise DecodeError(
            f"not a video: decord cannot open it ({_decord_reason(error)}); try the pyav backend"
        ) from error
    try:
        count = len(reader)
        if count == 0:
            raise DecodeError("no decodable frames")
        stamps = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)
        if not np.all(np.isfinite(stamps)) or stamps.min() < -TIME_TOLERANCE:
            # decord 0.6 turns missing pts (common in MPEG-PS) into huge negative times.
            raise DecodeError(
                "truncated or corrupt: decord reports invalid frame timestamps "
                "(use the pyav backend for this file)"
            )
        stamps -= stamps.min()
        chosen = select_frames(stamps, fps)
        distinct = np.unique(stamps)
        if max_frames is not None and max_frames < len(chosen):
            chosen = chosen[:max_frames]
            after = np.searchsorted(distinct, stamps[chosen[-1]], side="right")
            progress.duration = float(distinct[after])
        else:
            progress.duration = end_time(stamps, fps)
        for start in range(0, len(chosen), _DECORD_CHUNK):
            batch = chosen[start : start + _DECORD_CHUNK]
            frames = reader.get_batch(batch).asnumpy()  # decord turns them upright itself
            progress.height, progress.width = frames.shape[1:3]
            for index, frame in zip(batch, frames, strict=True):
                yield float(stamps[index]), frame
    except decord.DECORDError as error:
        raise DecodeError(f"truncated or corrupt: {_decord_reason(error)}") from error


def _frames(
    path: str | Path, fps: float, backend: str, progress: _Progress, max_frames: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    if backend == "pyav":
        return _iter_pyav(Path(path), fps, progress)
    if backend == "decord":
        return _iter_decord(Path(path), fps, progress, max_frames)
    check_decoder(backend)
    raise AssertionError(f"no iterator for the decoder {backend!r}")


class VideoStream:
    """A video's 6-fps stream, decoded lazily while it is iterated (once).

    Iteration yields (time in seconds, (H, W, 3) uint8 RGB frame) pairs and raises
    ``DecodeError`` for an unreadable video, possibly after some frames (a truncated file is
    noticed at its end). ``width`` and ``height`` are known from the first frame on,
    ``source_fps`` once decoding started, ``duration`` when iteration has ended.
    """

    def __init__(self, path: str | Path, fps: float = 6.0, backend: str = "pyav"):
        self.path = Path(path)
        self._progress = _Progress()
        self._frames = _frames(self.path, fps, backend, self._progress)

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return self._frames

    @property
    def width(self) -> int:
        return self._progress.width

    @property
    def height(self) -> int:
        return self._progress.height

    @property
    def source_fps(self) -> float | None:
        return self._progress.source_fps

    @property
    def duration(self) -> float:
        return self._progress.duration


def iter_frames(
    path: str | Path, fps: float = 6.0, backend: str = "pyav"
) -> Iterator[tuple[float, np.ndarray]]:
    """The 6-fps stream as (time, frame) pairs, decoded lazily (see :class:`VideoStream`)."""
    return iter(VideoStream(path, fps, backend))


def decode_video(
    path: str | Path, fps: float = 6.0, backend: str = "pyav", max_frames: int | None = None
) -> DecodedVideo:
    """Decode the 6-fps stream of a video; ``max_frames`` keeps only its first frames."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    progress = _Progress()
    stream = _frames(path, fps, backend, progress, max_frames)
    times: list[float] = []
    frames: list[np.ndarray] = []
    try:
        for time, frame in stream:
            times.append(time)
            frames.append(frame)
            if max_frames is not None and len(frames) == max_frames:
                break
    finally:
        stream.close()
    return DecodedVideo(
        frames=np.stack(frames),
        times=np.asarray(times, dtype=np.float64),
        width=progress.width,
        height=progress.height,
        source_fps=progress.source_fps,
        duration=progress.duration,
        backend=backend,
    )
