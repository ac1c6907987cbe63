"""Which frames of a video make the 6-fps stream, and which of those feed the networks.

Frames are chosen by presentation time, like ffmpeg ``-r 6 -vsync vfr``: the target times are
t_k = k / fps, the frame shown at t_k is the last frame whose pts is <= t_k, and a source frame
shown at several targets (sources slower than ``fps``, many GIFs) is kept once, so the stream
never duplicates frames. ``select_frames`` works on a whole pts list; ``FrameSelector`` gives the
same answer while decoding, holding at most one undecided frame.

Times are compared with a tolerance of ``TIME_TOLERANCE`` seconds: a frame due less than 1 ms
after a target counts as shown at it. Container clocks as coarse as 1 ms (Matroska, WebM, FLV)
and decord's float32 timestamps move frame times by up to half a millisecond, and without the
tolerance a frame that sits exactly on the 6-fps grid could be picked or missed depending on
that rounding (and the two decoding backends would disagree). Equivalently, every boundary
(frame starts and the end of the video) is moved 1 ms earlier.

A stream that lies wholly within the first millisecond (a header declaring an absurd frame rate,
say 4e9 fps, puts every frame there) has no target before its end; with the default duration
such a stream keeps its first frame, so every decodable video gives at least one frame.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

TIME_TOLERANCE = 1e-3
"""Seconds: a frame starting at most this long after a target time is shown at that target."""

T = TypeVar("T")


def _check_fps(fps: float) -> None:
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")


def _target_count(end: float, fps: float) -> int:
    """Number of targets k >= 0 with k / fps < end - TIME_TOLERANCE."""
    limit = end - TIME_TOLERANCE
    count = max(0, math.ceil(limit * fps))
    # ceil() of a rounded product can be one off; settle it with the exact comparison.
    while count > 0 and (count - 1) / fps >= limit:
        count -= 1
    while count / fps < limit:
        count += 1
    return count


def _first_target_at(time: float, fps: float) -> int:
    """First target a frame starting at ``time`` is shown at: min k >= 0, k/fps + tol >= time."""
    k = max(0, math.ceil((time - TIME_TOLERANCE) * fps))
    while k > 0 and (k - 1) / fps + TIME_TOLERANCE >= time:
        k -= 1
    while k / fps + TIME_TOLERANCE < time:
        k += 1
    return k


def _stream_end(last_pts: float, intervals: Sequence[float] | np.ndarray, fps: float) -> float:
    """End of the last frame's presentation: its pts plus the median frame interval.

    A single frame has no interval; it is shown for one target period, so it gives one frame.
    """
    if len(intervals) == 0:
        return last_pts + 1.0 / fps
    return last_pts + float(np.median(np.asarray(intervals, dtype=np.float64)))


def _median_of_counts(counts: Counter[float]) -> float:
    """``np.median`` of the multiset ``counts`` (value -> occurrences), in O(distinct values).

    Streams keep their frame intervals this way: a constant-rate video of any length has one
    distinct interval, so the selector's memory does not grow with the duration.
    """
    total = sum(counts.values())
    middle = [(total - 1) // 2, total // 2]  # ranks of the middle value(s)
    found: list[float] = []
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        while middle and middle[0] < seen:
            found.append(value)
            middle.pop(0)
    return float(np.mean(found))


def _sorted_unique(pts: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Original indices and pts in time order (stable), exact-duplicate pts dropped (first kept)."""
    values = np.asarray(pts, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"pts must be a flat sequence, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("pts must be finite numbers (a frame without a timestamp?)")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first], ordered[first]


def end_time(pts: Sequence[float], fps: float = 6.0) -> float:
    """The default duration of ``select_frames``: the end of the last frame's presentation.

    That is the last pts plus the median frame interval, or the pts plus one target period
    (1 / fps) for a single frame.
    """
    _check_fps(fps)
    _, ordered = _sorted_unique(pts)
    if len(ordered) == 0:
        raise ValueError("end_time needs at least one pts")
    return _stream_end(float(ordered[-1]), np.diff(ordered), fps)


def select_frames(
    pts: Sequence[float], fps: float = 6.0, duration: float | None = None
) -> list[int]:
    """Indices into ``pts`` of the frames shown at the target times t_k = k / fps.

    k runs 0, 1, ... while t_k < duration. The frame shown at t is the last one with pts <= t
    (targets before the first frame take the first frame); each source frame appears at most
    once. ``pts`` (seconds) may be irregular and unsorted; exact-duplicate pts keep their first
    occurrence. ``duration`` defaults to ``end_time(pts, fps)``; with that default a stream
    that ends before the first target's tolerance keeps its first frame. The result is in time
    order.
    """
    _check_fps(fps)
    order, ordered = _sorted_unique(pts)
    if len(ordered) == 0:
        return []
    end = _stream_end(float(ordered[-1]), np.diff(ordered), fps) if duration is None else duration
    targets = np.arange(_target_count(end, fps), dtype=np.float64) / fps
    if len(targets) == 0 and duration is None:
        return [int(order[0])]
    shown = np.searchsorted(ordered, targets + TIME_TOLERANCE, side="right") - 1
    shown = np.unique(np.maximum(shown, 0))
    return [int(i) for i in order[shown]]


class FrameSelector(Generic[T]):
    """Streaming ``select_frames``: push frames in time order, get each kept payload once final.

    A frame is decided as soon as the next (later) frame arrives, so only one payload is held.
    ``push`` returns the payloads that became final (zero or one), ``finish`` the last one. The
    kept payloads and their order equal ``select_frames`` on the same pts. Exact-duplicate pts
    are dropped (first kept); a pts earlier than one already pushed raises ``ValueError``. Until
    a payload is kept the first one is held too (the first-frame rule of ``select_frames``).
    """

    def __init__(self, fps: float = 6.0, duration: float | None = None) -> None:
        _check_fps(fps)
        self.fps = fps
        self.duration = duration
        self._limit = None if duration is None else _target_count(duration, fps)
        self._pending: tuple[float, int, T] | None = None  # pts, first target, payload
        self._first: list[T] = []  # the first payload, until some payload is kept
        self._intervals: Counter[float] = Counter()
        self._end: float | None = None

    @property
    def last_pts(self) -> float | None:
        """Pts of the newest frame pushed so far (None before the first)."""
        return None if self._pending is None else self._pending[0]

    @property
    def end(self) -> float:
        """The duration the selection used (``duration`` or the default); known after finish()."""
        if self._end is None:
            raise RuntimeError("the end time is known only after finish()")
        return self._end

    def _decide(self, first: int, stop: int, payload: T) -> list[T]:
        if self._limit is not None:
            stop = min(stop, self._limit)
        return [payload] if first < stop else []

    def push(self, pts: float, payload: T) -> list[T]:
        """Add the next frame; returns the payloads that this made final (in time order)."""
        if self._end is not None:
            raise RuntimeError("push() after finish()")
        if not math.isfinite(pts):
            raise ValueError(f"pts must be a finite number, got {pts}")
        if self._pending is None:
            # Targets before the first frame are shown with it, so it starts at target 0.
            self._pending = (pts, 0, payload)
            self._first = [payload]
            return []
        previous, first, held = self._pending
        if pts < previous:
            raise ValueError(f"pts must not decrease: {pts} after {previous}")
        if pts == previous:
            return []
        self._intervals[pts - previous] += 1
        start = _first_target_at(pts, self.fps)
        self._pending = (pts, start, payload)
        kept = self._decide(first, start, held)
        if kept:
            self._first = []
        return kept

    def finish(self) -> list[T]:
        """Decide the last frame; returns its payload if it is kept."""
        if self._end is not None:
            raise RuntimeError("finish() called twice")
        if self._pending is None:
            self._end = 0.0 if self.duration is None else self.duration
            return []
        last, first, held = self._pending
        self._pending = None
        if self.duration is not None:
            self._end = self.duration
        elif self._intervals:
            self._end = last + _median_of_counts(self._intervals)
        else:
            self._end = _stream_end(last, (), self.fps)
        kept = self._decide(first, _target_count(self._end, self.fps), held)
        if not kept and self._first and self.duration is None:
            kept = self._first  # nothing kept at all: the first-frame rule
        self._first = []
        return kept


def clip_positions(count: int, center: int, length: int = 8) -> np.ndarray:
    """The ``length`` 6-fps positions around ``center``: offsets -length//2 .. length//2 - 1.

    For the default 8 that is center-4 .. center+3, so the centre frame is the 5th of 8 (an
    even-length clip has no middle; this is the convention of ``range(c - L//2, c + L//2)``).
    Positions outside the stream are clamped to its first/last frame (edge replication), so
    every clip has ``length`` frames even for videos shorter than a clip.
    """
    if count < 1 or length < 1:
        raise ValueError(f"need count >= 1 and length >= 1, got count={count}, length={length}")
    if not 0 <= center < count:
        raise ValueError(f"center {center} is outside a stream of {count} frames")
    offsets = np.arange(length, dtype=np.int64) - length // 2
    return np.clip(center + offsets, 0, count - 1)
