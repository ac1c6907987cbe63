"""The Store view's data: a feature store read a page at a time, each video's boxes, labels and
shapes, and its sampled frames as JPEG images.

The list of videos is never loaded whole: a page is read from the store's HDF5 link index
(``H5Literate`` from the page's first position), so the first page of a store of 100,000 videos
costs what the first page of a store of ten does; a search scans the names once, keeping only
the page asked for. The store is reopened when its file is replaced on disk while the app
runs (the page then says so), and a damaged or vanished file is a message, not a crash.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import cv2
import h5py
import numpy as np

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.networks.vocab import attribute_names, object_names
from masn.extract.settings import ExtractionConfig
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS, METADATA, VideoRecord, escape_key

log = logging.getLogger(__name__)

# What the Store view shows of a video besides its metadata (no features are read for it).
SHOWN_FIELDS = tuple(
    name
    for name in (
        "boxes",
        "frame_times",
        "object_labels",
        "attribute_labels",
        "object_scores",
        "attribute_scores",
    )
    if name in FIELDS
)
FRAME_WIDTH = 480  # pixels: frames are scaled down to this width for the page
JPEG_QUALITY = 85
CACHED_VIDEOS = 16  # videos whose decoded frames are kept
PLAYABLE = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg"}
IMAGES = {".gif": "image/gif"}


@dataclass(frozen=True)
class VideoRow:
    """One line of the video list."""

    key: str
    frames: int
    duration: float
    width: int
    height: int


@dataclass(frozen=True)
class VideoPage:
    """A page of the video list: its rows, whether another page follows, and the store's size.

    matches: how many videos match the search (None without one)."""

    rows: list[VideoRow]
    page: int
    more: bool
    total: int
    matches: int | None = None


@dataclass(frozen=True)
class Box:
    """One detector box on a sampled frame, in the frame's pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    score: float | None
    attribute_score: float | None


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame: its index, its time in seconds and its boxes."""

    index: int
    time: float | None
    boxes: list[Box]


@dataclass
class VideoDetail:
    """What the Store view shows of one video."""

    key: str
    record: VideoRecord
    shapes: list[tuple[str, tuple[int, ...], str]]
    frames: list[SampledFrame]
    source: Path | None  # the video file, where it is reachable
    media_type: str | None  # how a browser can show the source (None: it cannot)
    attributes: dict[str, Any] = field(default_factory=dict)


def frame_boxes(record: VideoRecord, index: int) -> list[Box]:
    """The real (non-padding) boxes of sampled frame ``index`` with their labels and scores."""
    if record.boxes is None:
        return []
    objects, attributes = object_names(), attribute_names()

    def name(names: tuple[str, ...], labels: np.ndarray | None, k: int) -> str:
        if labels is None:
            return ""
        label = int(labels[index, k])
        return names[label] if 0 <= label < len(names) else f"#{label}"

    def score(scores: np.ndarray | None, k: int) -> float | None:
        return None if scores is None else float(scores[index, k])

    boxes = []
    for k, box in enumerate(np.asarray(record.boxes[index], dtype=float)):
        x1, y1, x2, y2 = box
        if not np.isfinite(box).all() or x2 <= x1 or y2 <= y1:
            continue  # padding
        label = " ".join(
            part
            for part in (
                name(attributes, record.attribute_labels, k),
                name(objects, record.object_labels, k),
            )
            if part
        )
        boxes.append(
            Box(
                x1,
                y1,
                x2,
                y2,
                label,
                score(record.object_scores, k),
                score(record.attribute_scores, k),
            )
        )
    return boxes


def sampled_frames(record: VideoRecord, indices: np.ndarray | list[int]) -> list[SampledFrame]:
    """The sampled frames ``indices`` of ``record`` with their times and boxes."""
    times = record.frame_times
    return [
        SampledFrame(int(i), None if times is None else float(times[i]), frame_boxes(record, i))
        for i in indices
    ]


def encode_jpeg(frame: np.ndarray) -> bytes:
    """An RGB frame as JPEG bytes, scaled down to ``FRAME_WIDTH`` pixels wide."""
    height, width = frame.shape[:2]
    if width > FRAME_WIDTH:
        size = (FRAME_WIDTH, max(1, round(height * FRAME_WIDTH / width)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def media_type(path: Path) -> str | None:
    """The type a browser plays or shows ``path`` as, or None for containers it cannot play."""
    suffix = path.suffix.lower()
    return PLAYABLE.get(suffix) or IMAGES.get(suffix)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file at ``path`` is replaced or rewritten (None: no file)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


class Catalogue:
    """The store behind the Store and Ask views, reopened when its file is replaced.

    Thread-safe: requests run in a thread pool (h5py serialises its own calls).
    """

    def __init__(self, path: Path, decoder: str = "pyav"):
        self.path = Path(path)
        self.decoder = decoder
        self.notice = ""  # said on every page once the store was replaced
        self._lock = threading.Lock()
        self._frames_lock = threading.Lock()
        self._store: FeatureStore | None = None
        self._identity: tuple[int, int, int, int] | None = None
        self._frames: collections.OrderedDict[tuple[tuple, str], list[bytes]] = (
            collections.OrderedDict()
        )
        self.store()  # a missing or damaged store is refused before the app starts

    def store(self) -> FeatureStore:
        """The open store; a file replaced on disk since it was opened is opened anew."""
        with self._lock:
            identity = _identity(self.path)
            if identity is None and self._identity is not None:
                raise MissingInput(
                    f"the feature store {self.path} is gone; put it back (or restart masn serve "
                    "with another --store)"
                )
            if self._store is None or identity != self._identity:
                replaced = self._store is not None
                self._store = None  # an old handle closes once no request reads it
                store = FeatureStore(self.path)
                count = len(store)  # opens the file: a damaged one fails here
                self._store, self._identity = store, identity
                if replaced:
                    self.notice = (
                        f"The store file {self.path} was replaced while the app was running; "
                        f"the pages now show the new file ({count:,} videos)."
                    )
                    log.warning("%s", self.notice)
            return self._store

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """The identity of the store file now open (after ``store()``)."""
        self.store()
        assert self._identity is not None
        return self._identity

    def config(self) -> dict[str, Any]:
        """The extraction configuration the store records."""
        return dict(self.store().provenance.config)

    def fps(self) -> float:
        """The rate the store's videos were decoded at (its frame times refer to it)."""
        return float(self.config().get("fps", ExtractionConfig().fps))

    def random_networks(self) -> bool:
        """Whether the store's features come from random networks."""
        weights = self.store().provenance.weights
        return any(str(value).startswith("random") for value in weights.values())

    def page(self, query: str, page: int, size: int) -> VideoPage:
        """Page ``page`` (from 0) of the videos whose key contains ``query`` (any case)."""
        store = self.store()
        videos = store.videos_group()
        total = len(videos)
        page = max(0, page)
        if not query:
            names = _names_from(videos, page * size, size)
            rows = [self._row(videos, name) for name in names]
            return VideoPage(rows, page, (page + 1) * size < total, total)
        wanted = query.casefold()
        start, matches, names = page * size, 0, []

        def visit(name: bytes) -> None:
            nonlocal matches
            if wanted in unquote(name.decode()).casefold():
                if start <= matches < start + size:
                    names.append(name)
                matches += 1

        videos.id.links.iterate(visit, idx_type=h5py.h5.INDEX_NAME, order=h5py.h5.ITER_INC)
        rows = [self._row(videos, name) for name in names]
        return VideoPage(rows, page, start + size < matches, total, matches)

    def _row(self, videos: h5py.Group, name: bytes) -> VideoRow:
        group = videos[name.decode()]
        attrs = group.attrs
        features = group.get("appearance")
        frames = int(features.shape[0]) if features is not None else 0
        return VideoRow(
            unquote(name.decode()),
            frames,
            float(attrs.get("duration", math.nan)),
            int(attrs.get("width", 0)),
            int(attrs.get("height", 0)),
        )

    def read(self, key: str, fields: tuple[str, ...] = SHOWN_FIELDS) -> VideoRecord:
        """The record of ``key``; an unknown key is an ``UnknownName`` with the closest keys."""
        store = self.store()
        if key not in store:
            raise UnknownName(f"no video {key!r} in the store {self.path}")
        return store.read(key, fields)

    def detail(self, key: str) -> VideoDetail:
        """The Store view of one video: metadata, shapes, frames with boxes, the source."""
        store = self.store()
        record = self.read(key)
        group = store.videos_group()[escape_key(key)]
        shapes = [
            (name, tuple(int(n) for n in dataset.shape), str(dataset.dtype))
            for name, dataset in group.items()
            if isinstance(dataset, h5py.Dataset)
        ]
        count = record.frame_times.shape[0] if record.frame_times is not None else 0
        if not count and "appearance" in group:
            count = int(group["appearance"].shape[0])
        source = self.source(record)
        attributes = {name: getattr(record, name) for name in METADATA}
        return VideoDetail(
            key=key,
            record=record,
            shapes=shapes,
            frames=sampled_frames(record, range(count)),
            source=source,
            media_type=None if source is None else media_type(source),
            attributes=attributes,
        )

    def source(self, record: VideoRecord) -> Path | None:
        """The video file the store records for ``record``, where it is a readable file.

        Only this path is ever served: never one a client names."""
        if not record.path:
            return None
        path = Path(record.path)
        return path if path.is_file() and os.access(path, os.R_OK) else None

    def frame_jpeg(self, key: str, index: int) -> bytes:
        """Sampled frame ``index`` of ``key`` as a JPEG (all of the video's sampled frames are
        decoded once and kept for the last ``CACHED_VIDEOS`` videos)."""
        identity = self.identity
        with self._frames_lock:  # one decode per video, however many images the page asks for
            cached = self._frames.get((identity, key))
            if cached is None:
                record = self.read(key, ("frame_times",))
                source = self.source(record)
                if source is None or record.frame_times is None:
                    raise MissingInput(
                        f"the video file of {key!r} is not reachable at {record.path!r}"
                    )
                from masn.extract.show import frames_at  # matplotlib: only once frames are shown

                frames = frames_at(source, record.frame_times, self.fps(), self.decoder)
                cached = [encode_jpeg(frame) for frame in frames]
                self._frames[(identity, key)] = cached
                while len(self._frames) > CACHED_VIDEOS:
                    self._frames.popitem(last=False)
            else:
                self._frames.move_to_end((identity, key))
        if not 0 <= index < len(cached):
            raise InvalidInput(f"video {key!r} has {len(cached)} sampled frames, not {index + 1}")
        return cached[index]


def _names_from(videos: h5py.Group, start: int, count: int) -> list[bytes]:
    """``count`` link names of ``videos`` from position ``start`` in name order."""
    names: list[bytes] = []
    if count <= 0 or start >= len(videos):
        return names

    def visit(name: bytes) -> bool | None:
        names.append(name)
        return True if len(names) >= count else None

    videos.id.links.iterate(visit, idx_type=h5py.h5.INDEX_NAME, order=h5py.h5.ITER_INC, idx=start)
    return names
