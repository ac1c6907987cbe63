"""The feature store: one HDF5 file of per-video MASN features, written crash-safely.

Layout (DESIGN.md, "Extraction contract"). Root attributes: ``format`` ("masn-features"),
``version`` (1), ``config`` (JSON of the extraction configuration), ``weights`` (JSON: network ->
sha256, "random" or "unknown"), ``created`` (ISO time) and ``feature_dtype``. The group
``videos`` holds one group per video, named by its key escaped with ``quote(key, safe="")``
(keys of folder datasets are relative paths and may contain "/"), with the datasets of
``FIELDS`` and the metadata attributes ``key``, ``path``, ``width``, ``height``, ``source_fps``,
``duration`` and ``frames``. ``path`` is text, or the raw bytes of a path that is not valid
UTF-8 (read back as ``os.fsdecode`` gives it, so the file can be opened again).

HDF5 files are not crash-safe while open for writing, so nothing ever appends to a finished
store. ``StoreWriter`` commits each video as its own small file in ``<store>.parts/``: a
``PartWriter`` appends the video's rows to resizable datasets of a temporary file as they come
(memory does not grow with the video's length), then copies them into contiguous datasets,
fsyncs and renames the file into place. ``consolidate`` packs store + parts into a new file that
atomically replaces the store. A ``kill -9`` therefore loses only the videos in flight, and
readers only ever see complete files.

A file where a store should be that HDF5 cannot read (cut short, emptied, overwritten) is a
``DamagedStore`` error for readers; a ``StoreWriter`` moves it aside to
``<store>.corrupt-<UTC time>`` (never deleting it) and rebuilds the store from the committed
parts, so the videos that were only in it are extracted again.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import quote, unquote

import h5py
import numpy as np

from masn.atomic import fsync, remove_stale_temporaries, replacing, write_text
from masn.errors import InUse, InvalidInput, MissingInput, UnknownName

log = logging.getLogger(__name__)

FORMAT = "masn-features"
VERSION = 1
FeatureDtype = Literal["float16", "float32"]

# Symbolic shape of every field: T sampled frames, N objects, A / M appearance / motion widths.
SHAPES: dict[str, tuple[str | int, ...]] = {
    "appearance": ("T", "A"),
    "appearance_objects": ("T", "N", "A"),
    "motion": ("T", "M"),
    "motion_objects": ("T", "N", "M"),
    "box_geometry": ("T", "N", 6),
    "boxes": ("T", "N", 4),
    "frame_times": ("T",),
    "object_labels": ("T", "N"),
    "attribute_labels": ("T", "N"),
    "object_scores": ("T", "N"),
    "attribute_scores": ("T", "N"),
}
FEATURE_FIELDS = ("appearance", "appearance_objects", "motion", "motion_objects")
REQUIRED_FIELDS = (*FEATURE_FIELDS, "box_geometry")
FIELDS = tuple(SHAPES)
# Stored dtypes of the non-feature fields (features use the store's feature dtype).
FIXED_DTYPES = {
    "box_geometry": np.dtype(np.float32),
    "boxes": np.dtype(np.float32),
    "frame_times": np.dtype(np.float64),
    "object_labels": np.dtype(np.int16),
    "attribute_labels": np.dtype(np.int16),
    "object_scores": np.dtype(np.float32),
    "attribute_scores": np.dtype(np.float32),
}
# Longest escaped key used verbatim as a part file name (file names are limited to 255 bytes).
_MAX_PART_STEM = 200
# Bytes per chunk of a part's staging datasets, and per block when they are copied at commit.
_BLOCK_BYTES = 1 << 20


class DamagedStore(InvalidInput):
    """A file where a feature store should be that cannot be read as one."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(
            f"{path} is damaged or not an HDF5 file ({problem}); rerun `masn extract` with "
            f"--out {path} to rebuild it (the damaged file is moved aside), or use another store"
        )


@dataclass(eq=False)
class VideoRecord:
    """One video's features (numpy arrays, T sampled frames x N objects) and metadata.

    The ``REQUIRED_FIELDS`` must be set to write a record; the other arrays may be None (a store
    imported from the official files has no pixel boxes, labels or scores), and
    ``FeatureStore.read`` leaves fields that were not asked for as None. Unknown metadata:
    width, height and frames 0, source_fps and duration NaN.
    """

    key: str
    appearance: np.ndarray | None = None
    appearance_objects: np.ndarray | None = None
    motion: np.ndarray | None = None
    motion_objects: np.ndarray | None = None
    box_geometry: np.ndarray | None = None
    boxes: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    object_labels: np.ndarray | None = None
    attribute_labels: np.ndarray | None = None
    object_scores: np.ndarray | None = None
    attribute_scores: np.ndarray | None = None
    path: str = ""
    width: int = 0
    height: int = 0
    source_fps: float = math.nan
    duration: float = math.nan
    frames: int = 0

    @staticmethod
    def geometry_from_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """(..., 6) float32 ``[x1/W, y1/H, x2/W, y2/H, (x2-x1)/W, (y2-y1)/H]`` of pixel boxes.

        The six location numbers MASN reads (masn_reference §2.4); all-zero (padding) boxes
        give all-zero rows.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape[-1:] != (4,):
            raise ValueError(f"boxes must end in (x1, y1, x2, y2), got shape {boxes.shape}")
        x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
        geometry = [x1 / width, y1 / height, x2 / width, y2 / height]
        geometry += [(x2 - x1) / width, (y2 - y1) / height]
        return np.stack(geometry, axis=-1).astype(np.float32)


# Video metadata attributes and their Python types.
METADATA: dict[str, type] = {
    "path": str,
    "width": int,
    "height": int,
    "source_fps": float,
    "duration": float,
    "frames": int,
}


@dataclass(frozen=True)
class Provenance:
    """What made a store: the extraction configuration, the weights' checksums, the time."""

    config: dict[str, Any]
    weights: dict[str, str]
    created: str

    @classmethod
    def new(cls, config: Mapping[str, Any], weights: Mapping[str, str]) -> Provenance:
        """Provenance stamped now; config and weights normalised through JSON."""
        try:
            config_ = json.loads(json.dumps(dict(config)))
            weights_ = json.loads(json.dumps(dict(weights)))
        except TypeError as error:
            raise TypeError(
                f"config and weights must be JSON-serialisable (dicts, lists, str...): {error}"
            ) from None
        return cls(config_, weights_, datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def mismatch(self, other: Provenance) -> list[str]:
        """What differs from ``other`` (ignoring the creation time), e.g. ``config (fps)``."""
        found = []
        for name in ("config", "weights"):
            mine, theirs = getattr(self, name), getattr(other, name)
            keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if keys:
                found.append(f"{name} ({', '.join(keys)})")
        return found


def escape_key(key: str) -> str:
    """The HDF5 group name of a video key; rejects keys that cannot name a group."""
    if not isinstance(key, str) or key in ("", ".", ".."):
        raise InvalidInput(f"invalid video key {key!r}: use a non-empty name other than . and ..")
    try:
        return quote(key, safe="")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"video key {key!r} is not valid Unicode (an undecodable file name?); rename the file"
        ) from None


def prepare_arrays(record: VideoRecord, dtype: FeatureDtype) -> dict[str, np.ndarray]:
    """The record's arrays in their stored dtypes, after checking presence, shapes and values."""
    escape_key(record.key)
    missing = [name for name in REQUIRED_FIELDS if getattr(record, name) is None]
    if missing:
        raise ValueError(f"video {record.key!r}: missing required field(s) {', '.join(missing)}")
    arrays = {
        name: np.asarray(value) for name in FIELDS if (value := getattr(record, name)) is not None
    }
    _check_shapes(record.key, arrays)
    return {name: _cast(record.key, name, array, dtype) for name, array in arrays.items()}


def _check_shapes(
    key: str, arrays: Mapping[str, np.ndarray], sizes: dict[str, int] | None = None
) -> None:
    """Every array matches its symbolic shape with one size per symbol; ``sizes`` carries the
    object and feature widths from earlier blocks of the same video (T may differ)."""
    sizes = {} if sizes is None else sizes
    sizes.pop("T", None)
    consistent = True
    for name, array in arrays.items():
        pattern = SHAPES[name]
        if array.ndim != len(pattern):
            consistent = False
            continue
        for symbol, size in zip(pattern, array.shape, strict=True):
            expected = sizes.setdefault(symbol, size) if isinstance(symbol, str) else symbol
            consistent &= size == expected and size > 0
    if not consistent:
        found = ", ".join(f"{name} {tuple(array.shape)}" for name, array in arrays.items())
        wanted = ", ".join(f"{name} ({', '.join(map(str, SHAPES[name]))})" for name in arrays)
        raise ValueError(
            f"video {key!r}: inconsistent shapes {found}; expected {wanted} with one T (sampled "
            "frames >= 1) and one N (objects >= 1) throughout"
        )


def _cast(key: str, name: str, array: np.ndarray, dtype: FeatureDtype) -> np.ndarray:
    target = np.dtype(dtype) if name in FEATURE_FIELDS else FIXED_DTYPES[name]
    if target.kind == "i":
        if array.dtype.kind not in "iu":
            raise ValueError(f"video {key!r}: {name} must hold integers, got {array.dtype}")
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise ValueError(f"video {key!r}: {name} has values outside the {target} range")
    elif array.dtype.kind not in "iuf":
        raise ValueError(f"video {key!r}: {name} must be numeric, got {array.dtype}")
    with np.errstate(over="ignore"):  # overflow is reported below, with the fix
        stored = array.astype(target, copy=False)
    if stored.dtype.kind == "f" and not np.isfinite(stored).all():
        if not np.isfinite(array).all():
            cause = "NaN or inf"
        elif target == np.float16:
            cause = "values too large for float16; write a float32 store"
        else:
            cause = f"values too large for {target}"
        raise ValueError(f"video {key!r}: {name} has non-finite values ({cause})")
    return stored


def _write_metadata(group: h5py.Group, key: str, metadata: Mapping[str, Any]) -> None:
    group.attrs["key"] = key
    for name, kind in METADATA.items():
        value = kind(metadata[name])
        if name == "path":
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # an undecodable file name: keep its bytes
                value = np.bytes_(os.fsencode(value))
        group.attrs[name] = value


def _read_metadata(attrs: h5py.AttributeManager) -> dict[str, Any]:
    metadata = {}
    for name, kind in METADATA.items():
        value = attrs[name]
        metadata[name] = os.fsdecode(value) if isinstance(value, bytes) else kind(value)
    return metadata


def _record_metadata(record: VideoRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in METADATA}


def _write_group(videos: h5py.Group, record: VideoRecord, arrays: Mapping[str, np.ndarray]) -> None:
    group = videos.create_group(escape_key(record.key))
    for name, array in arrays.items():
        group.create_dataset(name, data=array)
    _write_metadata(group, record.key, _record_metadata(record))


def add_video(videos: h5py.Group, record: VideoRecord, dtype: FeatureDtype) -> None:
    """Validates ``record`` and writes it into a store's open ``videos`` group."""
    _write_group(videos, record, prepare_arrays(record, dtype))


def check_dtype(dtype: str) -> None:
    """Refuses feature dtypes other than float16 and float32."""
    if dtype not in ("float16", "float32"):
        raise InvalidInput(f"feature dtype must be float16 or float32, got {dtype!r}")


def init_store(file: h5py.File, provenance: Provenance, dtype: FeatureDtype) -> h5py.Group:
    """Writes the root attributes of a new store into ``file``; returns its ``videos`` group."""
    check_dtype(dtype)
    file.attrs.update(
        format=FORMAT,
        version=VERSION,
        config=json.dumps(provenance.config, sort_keys=True),
        weights=json.dumps(provenance.weights, sort_keys=True),
        created=provenance.created,
        feature_dtype=dtype,
    )
    return file.create_group("videos")


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """A new HDF5 file that replaces ``path`` only once complete and on disk
    (``masn.atomic.replacing``: temporary name, fsync, rename; leftovers of killed runs go)."""
    with replacing(path) as temporary, h5py.File(temporary, "w", locking=False) as file:
        yield file


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuses an output path a store cannot be written to, before any work starts.

    The path must not be a folder or a special file (such as /dev/null), its folder must exist
    and accept new files (the store is replaced by renaming a new file into place), and no other
    process may be writing it (``InUse``).
    """
    path = Path(path)
    where = f"cannot write the feature store {path}:"
    if path.is_dir():
        example = path / "features.h5"
        raise InvalidInput(f"{where} it is a folder; give a file path such as {example}")
    if path.exists() and not path.is_file():
        raise InvalidInput(f"{where} it is not a regular file; give a path such as features.h5")
    folder = path.parent
    if not folder.exists():
        raise MissingInput(f"{where} the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InvalidInput(f"{where} {folder} is not a folder")
    probe = folder / f".{path.name}.probe.{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise InvalidInput(
            f"{where} its folder does not accept new files ({error.strerror}); choose a "
            "writable output folder"
        ) from None
    _check_unlocked(path.with_name(path.name + ".parts") / ".lock", path)


def _in_use(store: Path) -> InUse:
    return InUse(f"another process is writing {store}; wait for it to finish or write elsewhere")


def _check_unlocked(lock: Path, store: Path) -> None:
    """Raises ``InUse`` when a writer holds ``lock`` now (the early, advisory check)."""
    try:
        descriptor = os.open(lock, os.O_RDWR)
    except OSError:
        return  # no lock file: nobody writes (the writer's own lock settles races)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(store) from None
    except OSError:
        pass  # no locks on this file system; the writer warns about it
    finally:
        os.close(descriptor)


class PartWriter:
    """One video's part file, written block by block (rows in position order).

    Each field's rows are appended to a raw staging file as they come, so a video of any length
    is written with bounded memory; ``commit`` copies them block by block into the contiguous
    datasets of a new part file (the store's layout), fsyncs it and renames it into the parts
    folder. ``abort`` (also on leaving ``with`` uncommitted) removes the temporary files, as
    does the next writer after a ``kill -9``. Get one from ``StoreWriter.begin``.
    """

    def __init__(self, writer: StoreWriter, key: str, stem: str):
        self.key = key
        self.rows = 0
        self._writer = writer
        self._prefix = writer.parts_dir / f".{stem}.{os.getpid()}"
        self._final = writer.parts_dir / f"{stem}.h5"
        self._fields: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self._staged: dict[str, BinaryIO] = {}
        self._sizes: dict[str, int] = {}
        self._open = True

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _staging(self, name: str) -> Path:
        return Path(f"{self._prefix}.{name}.tmp")

    def append(self, arrays: Mapping[str, np.ndarray | None]) -> None:
        """Appends the next rows: the same fields every time, each with the rows on axis 0."""
        if not self._open:
            raise RuntimeError(f"the part of {self.key!r} is closed")
        given = {name: np.asarray(value) for name, value in arrays.items() if value is not None}
        unknown = sorted(set(given) - set(FIELDS))
        if unknown:
            raise ValueError(f"video {self.key!r}: unknown field(s) {unknown}")
        if self._fields and set(given) != set(self._fields):
            raise ValueError(
                f"video {self.key!r}: fields {sorted(given)} differ from the first rows' "
                f"{sorted(self._fields)}"
            )
        _check_shapes(self.key, given, self._sizes)
        for name, array in given.items():
            stored = _cast(self.key, name, array, self._writer.dtype)
            if name not in self._fields:
                self._fields[name] = (stored.dtype, stored.shape[1:])
                self._staged[name] = self._staging(name).open("wb")
            self._staged[name].write(np.ascontiguousarray(stored).tobytes())
        self.rows += len(next(iter(given.values())))

    def commit(
        self,
        *,
        path: str,
        width: int,
        height: int,
        source_fps: float,
        duration: float,
        frames: int,
    ) -> None:
        """Publishes the video with its metadata (see ``VideoRecord``) as a committed part."""
        if not self._open:
            raise RuntimeError(f"the part of {self.key!r} is closed")
        missing = [name for name in REQUIRED_FIELDS if name not in self._fields]
        if missing:
            raise ValueError(
                f"video {self.key!r}: missing required field(s) {', '.join(missing)}"
                if self.rows
                else f"video {self.key!r}: no sampled frames to store"
            )
        for handle in self._staged.values():
            handle.close()
        metadata = {"path": path, "width": width, "height": height, "source_fps": source_fps}
        metadata |= {"duration": duration, "frames": frames}
        # Not masn.atomic.replacing: its scan of the folder for stale files would grow with
        # the number of parts; the writer clears the parts folder's temporaries once instead.
        temporary = Path(f"{self._prefix}.h5.tmp")
        try:
            with h5py.File(temporary, "w", locking=False) as file:
                group = file.create_group("videos").create_group(escape_key(self.key))
                for name, (dtype, shape) in self._fields.items():
                    _copy_staged(self._staging(name), group, name, dtype, (self.rows, *shape))
                _write_metadata(group, self.key, metadata)
            fsync(temporary)
            os.replace(temporary, self._final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        finally:
            self.abort()  # the staging files
        self._writer._committed(self.key)

    def abort(self) -> None:
        """Drops the video's temporary files (after ``commit``: its staging files only)."""
        self._open = False
        for name, handle in self._staged.items():
            with contextlib.suppress(OSError):
                handle.close()
            self._staging(name).unlink(missing_ok=True)
        self._staged.clear()


def _copy_staged(
    staged: Path, group: h5py.Group, name: str, dtype: np.dtype, shape: tuple[int, ...]
) -> None:
    """A contiguous dataset filled from a raw staging file, ``_BLOCK_BYTES`` at a time."""
    dataset = group.create_dataset(name, shape=shape, dtype=dtype)
    rows = np.memmap(staged, dtype=dtype, mode="r", shape=shape)
    block = max(1, _BLOCK_BYTES // max(1, rows[0].nbytes))
    for start in range(0, shape[0], block):
        dataset[start : start + block] = rows[start : start + block]
    del rows


class StoreWriter:
    """Writes a store video by video so that a killed run loses only the videos in flight.

    Each video is committed as ``<store>.parts/<escaped key>.h5`` (``begin`` streams its rows,
    ``write`` takes a whole record); ``consolidate`` packs the existing store and all parts into
    a new store file that atomically replaces the old one. A rerun with the same config and
    weights skips ``done_keys()``; a different config, weights or feature dtype is refused. A
    damaged store file is moved aside (see the module docstring). One writer per store at a time
    (file lock); ``begin`` and ``write`` may be called from a background thread.
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        config: Mapping[str, Any],
        weights: Mapping[str, str],
        dtype: FeatureDtype = "float16",
    ):
        check_dtype(dtype)
        self.path = Path(store_path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.dtype: FeatureDtype = dtype
        self.provenance = Provenance.new(config, weights)
        self._lock_fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidInput(
                f"cannot create the folder {self.path.parent} of {self.path}: {error.strerror}"
            ) from None
        check_output(self.path)
        self.parts_dir.mkdir(exist_ok=True)
        self._lock_fd = _lock(self.parts_dir / ".lock", self.path)
        try:
            for stale in self.parts_dir.glob(".*.tmp"):
                log.info("removing %s, left by an interrupted run", stale)
                stale.unlink()
            remove_stale_temporaries(self.path)
            self._set_aside_if_damaged()
            self._check_origin()
            self._done = set(self._parts()) | set(_store_keys(self.path))
        except BaseException:
            self.close()
            raise
        self._done_lock = threading.Lock()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def done_keys(self) -> frozenset[str]:
        """Keys already committed, in parts or in the consolidated store."""
        with self._done_lock:
            return frozenset(self._done)

    def begin(self, key: str) -> PartWriter:
        """A part writer for the video ``key`` (not yet committed)."""
        if self._lock_fd is None:
            raise RuntimeError(f"the writer of {self.path} is closed")
        with self._done_lock:
            if key in self._done:
                raise ValueError(
                    f"video {key!r} is already in {self.path}; skip done_keys() on reruns"
                )
        return PartWriter(self, key, _part_stem(key))

    def write(self, record: VideoRecord) -> None:
        """Validates and commits one whole video (a part file: temporary name, fsync, rename)."""
        arrays = prepare_arrays(record, self.dtype)
        with self.begin(record.key) as part:
            part.append(arrays)
            part.commit(**_record_metadata(record))

    def _committed(self, key: str) -> None:
        with self._done_lock:
            self._done.add(key)

    def consolidate(self) -> Path:
        """Packs the store and all committed parts into the store file, then deletes the parts.

        Safe to interrupt: the old store and the parts stay intact until the new store has
        replaced the old one, and parts already packed are simply packed again by a rerun.
        Needs free disk space for a second copy of the store.
        """
        if self._lock_fd is None:
            raise RuntimeError(f"the writer of {self.path} is closed")
        parts = self._parts()
        if not parts and self.path.exists():
            return self.path
        created = _read_provenance(self.path)[0].created if self.path.exists() else None
        provenance = Provenance(
            self.provenance.config, self.provenance.weights, created or self._parts_created()
        )
        with atomic_hdf5(self.path) as out:
            videos = init_store(out, provenance, self.dtype)
            for part in parts.values():
                _copy_part(part, videos)
            if self.path.exists():
                with _open_store_file(self.path) as old:
                    for name, group in old["videos"].items():
                        if name not in videos:
                            old.copy(group, videos, name)
            total = len(videos)
        for part in parts.values():
            part.unlink()
        log.info("%s: %d videos (%d from parts)", self.path, total, len(parts))
        return self.path

    def close(self) -> None:
        """Releases the store; removes the staging folder when no parts are left in it."""
        if self._lock_fd is None:
            return
        if not any(name.endswith(".h5") for name in os.listdir(self.parts_dir)):
            for name in ("provenance.json", ".lock"):
                (self.parts_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.parts_dir.rmdir()
        os.close(self._lock_fd)
        self._lock_fd = None

    def _parts(self) -> dict[str, Path]:
        parts = {}
        for entry in os.scandir(self.parts_dir):
            if entry.name.endswith(".h5"):
                stem = entry.name[: -len(".h5")]
                key = _part_key(Path(entry.path)) if stem.startswith("#") else unquote(stem)
                parts[key] = Path(entry.path)
        return parts

    def _set_aside_if_damaged(self) -> None:
        """Moves a store file that cannot be read to ``<store>.corrupt-<UTC time>``."""
        if not self.path.exists():
            return
        try:
            _store_keys(self.path)
        except DamagedStore as error:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            os.replace(self.path, aside)
            fsync(self.path.parent)
            log.warning(
                "%s is damaged (%s): moved it to %s; rebuilding the store from the committed "
                "parts (videos that were only in it are extracted again)",
                self.path,
                error.problem,
                aside,
            )

    def _check_origin(self) -> None:
        """Refuses a store or staging folder made with another config, weights or dtype."""
        record = self.parts_dir / "provenance.json"
        origins = []
        if self.path.exists():
            origins.append((self.path, *_read_provenance(self.path)))
        if record.exists():
            saved = json.loads(record.read_text())
            saved_provenance = Provenance(saved["config"], saved["weights"], saved["created"])
            origins.append((record, saved_provenance, saved["feature_dtype"]))
        for where, provenance, dtype in origins:
            found = provenance.mismatch(self.provenance)
            if dtype != self.dtype:
                found.append(f"feature dtype ({dtype} there, {self.dtype} here)")
            if found:
                raise InvalidInput(
                    f"{where} was made with a different {' and '.join(found)}; write to another "
                    "output path (or delete the old store and its .parts folder to start over)"
                )
        if not record.exists():
            saved = {**self.provenance.__dict__, "feature_dtype": self.dtype}
            write_text(record, json.dumps(saved))

    def _parts_created(self) -> str:
        return json.loads((self.parts_dir / "provenance.json").read_text())["created"]


def _lock(path: Path, store: Path) -> int:
    """An exclusive lock on ``path`` held until the descriptor closes (also on kill -9)."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise _in_use(store) from None
        except OSError as error:
            if error.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                os.close(descriptor)
                raise
            log.warning("no file locks on this file system: run one writer of %s at a time", store)
            return descriptor
        # A writer that finished may have deleted the lock file between our open and flock.
        if path.exists() and os.stat(path).st_ino == os.fstat(descriptor).st_ino:
            return descriptor
        os.close(descriptor)


def _part_stem(key: str) -> str:
    """Escaped key, or "#" + its sha256 when too long for a file name ("#" is always escaped)."""
    name = escape_key(key)
    return name if len(name) <= _MAX_PART_STEM else "#" + hashlib.sha256(key.encode()).hexdigest()


def _part_key(part: Path) -> str:
    try:
        with h5py.File(part, "r", locking=False) as file:
            return str(file["videos"][next(iter(file["videos"]))].attrs["key"])
    except (OSError, KeyError, StopIteration) as error:
        raise _unreadable_part(part, error) from error


def _unreadable_part(part: Path, error: BaseException) -> InvalidInput:
    return InvalidInput(
        f"cannot read the committed part {part} ({error}); delete it and rerun to extract "
        "that video again"
    )


def _copy_part(part: Path, videos: h5py.Group) -> None:
    try:
        with h5py.File(part, "r", locking=False) as file:
            for name, group in file["videos"].items():
                file.copy(group, videos, name)
    except (OSError, KeyError) as error:
        raise _unreadable_part(part, error) from error


def _open_store_file(path: Path) -> h5py.File:
    """``path`` opened read-only; a file HDF5 cannot read is a ``DamagedStore`` error."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not a feature store file")
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise MissingInput(f"no feature store at {path}") from None
    except PermissionError:
        raise InvalidInput(f"cannot read {path}: permission denied") from None
    except OSError as error:
        problem = str(error).split("(", 1)[-1].rstrip(")") if "(" in str(error) else str(error)
        raise DamagedStore(path, problem) from None


def _read_provenance(path: Path) -> tuple[Provenance, str]:
    with _open_store_file(path) as file:
        return _provenance_of(file, path)


def _provenance_of(file: h5py.File, path: Path) -> tuple[Provenance, str]:
    attrs = file.attrs
    if attrs.get("format") != FORMAT:
        raise InvalidInput(
            f"{path} is not a MASN feature store (no format={FORMAT!r} attribute); for the "
            "official MASN feature files use `masn features import-official` "
            "(masn.extract.store.official.import_official)"
        )
    try:
        version = int(attrs["version"])
        config, weights = json.loads(attrs["config"]), json.loads(attrs["weights"])
        created, dtype = str(attrs["created"]), str(attrs["feature_dtype"])
    except (KeyError, ValueError, TypeError) as error:
        raise DamagedStore(path, f"unreadable store attributes: {error}") from None
    if version > VERSION:
        raise InvalidInput(
            f"{path} has store version {version}, newer than this code reads "
            f"({VERSION}); update the masn package"
        )
    return Provenance(config, weights, created), dtype


def _videos_of(file: h5py.File, path: Path) -> h5py.Group:
    try:
        return file["videos"]
    except (KeyError, OSError) as error:
        raise DamagedStore(path, f"no readable videos group: {error}") from None


def _store_keys(path: Path) -> list[str]:
    """The keys of the store at ``path`` (none if absent), after checking its provenance."""
    if not path.exists():
        return []
    with _open_store_file(path) as file:
        _provenance_of(file, path)
        try:
            return [unquote(name) for name in _videos_of(file, path)]
        except OSError as error:
            raise DamagedStore(path, f"unreadable list of videos: {error}") from None


class FeatureStore:
    """Read-only access to a consolidated store; usable from DataLoader worker processes.

    The HDF5 file is opened on first access in each process (HDF5 handles must not cross a
    fork) and the object pickles without it. Once a process has read the file, a store that
    was replaced on disk meanwhile is refused rather than mixed with the old one.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            parts = self.path.with_name(self.path.name + ".parts")
            hint = (
                f"; {parts} holds unconsolidated videos: rerun the extraction to consolidate them"
                if parts.is_dir()
                else ""
            )
            raise MissingInput(f"no feature store at {self.path}{hint}")
        self.provenance, self.feature_dtype = _read_provenance(self.path)
        self._file: h5py.File | None = None
        self._videos: h5py.Group | None = None
        self._pid: int | None = None
        self._identity: tuple[int, int] | None = None
        self._keys: list[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_videos": None, "_pid": None}

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._group())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            name = escape_key(key)
        except ValueError:
            return False
        return name in self._group()

    def keys(self) -> list[str]:
        """The original video keys, in storage order."""
        if self._keys is None:
            self._keys = [unquote(name) for name in self._group()]
        return list(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def num_frames(self, key: str) -> int:
        """T, the number of sampled frames of ``key`` (read from the shape, no data read)."""
        return int(self._video(key)["appearance"].shape[0])

    def read(self, key: str, fields: Iterable[str] | None = None) -> VideoRecord:
        """The video's record; only ``fields`` are read (all when None), absent ones are None."""
        wanted = FIELDS if fields is None else tuple(fields)
        unknown = sorted(set(wanted) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; choose from {list(FIELDS)}")
        group = self._video(key)
        try:
            arrays = {
                name: dataset[()] for name in wanted if (dataset := group.get(name)) is not None
            }
            metadata = _read_metadata(group.attrs)
        except (OSError, KeyError) as error:
            raise DamagedStore(self.path, f"cannot read video {key!r}: {error}") from None
        return VideoRecord(key=key, **arrays, **metadata)

    def close(self) -> None:
        """Closes this process's handle (a later access reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._videos = None

    def _group(self) -> h5py.Group:
        if self._videos is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent: leave it alone.
            file = _open_store_file(self.path)
            status = os.fstat(file.id.get_vfd_handle())
            identity = (status.st_dev, status.st_ino)
            if self._identity not in (None, identity):
                file.close()
                raise RuntimeError(
                    f"{self.path} was replaced (by a consolidation or merge) after it was first "
                    "read; create a new FeatureStore to read the new file"
                )
            self._file, self._pid, self._identity = file, os.getpid(), identity
            self._videos = _videos_of(file, self.path)
        return self._videos

    def _video(self, key: str) -> h5py.Group:
        try:
            return self._group()[escape_key(key)]
        except (KeyError, ValueError):
            close = difflib.get_close_matches(str(key), self.keys(), n=3)
            hint = f"; close keys: {', '.join(map(repr, close))}" if close else ""
            raise UnknownName(f"no video {key!r} in {self.path}{hint}") from None


def merge_stores(
    shard_paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]
) -> Path:
    """Joins consolidated shard stores into ``out_path`` (atomically replaced); returns it.

    Shards must share config, weights and feature dtype, so per-rank values must stay out of
    the extraction config. A key in several shards must have identical arrays there.
    """
    out_path = Path(out_path)
    if not shard_paths:
        raise InvalidInput("merge_stores needs at least one shard")
    check_output(out_path)
    shards = [FeatureStore(path) for path in shard_paths]
    try:
        if any(out_path.resolve() == shard.path.resolve() for shard in shards):
            raise InvalidInput(f"{out_path} is one of the shards; merge into a new path")
        first = shards[0]
        for shard in shards[1:]:
            found = shard.provenance.mismatch(first.provenance)
            if shard.feature_dtype != first.feature_dtype:
                found.append(f"feature dtype ({shard.feature_dtype}, {first.feature_dtype})")
            if found:
                raise InvalidInput(
                    f"shard {shard.path} differs from {first.path} in {' and '.join(found)}; "
                    "shards must come from one extraction configuration"
                )
        created = min(shard.provenance.created for shard in shards)
        provenance = Provenance(first.provenance.config, first.provenance.weights, created)
        with atomic_hdf5(out_path) as out:
            videos = init_store(out, provenance, first.feature_dtype)
            origin: dict[str, Path] = {}
            for shard in shards:
                source = shard._group()
                for name, group in source.items():
                    if name not in videos:
                        source.file.copy(group, videos, name)
                        origin[name] = shard.path
                    elif not _same_arrays(videos[name], group):
                        raise InvalidInput(
                            f"video {unquote(name)!r} differs between {origin[name]} and "
                            f"{shard.path}; re-extract it or drop it from one shard"
                        )
            total = len(videos)
    finally:
        for shard in shards:
            shard.close()
    log.info("merged %d shards into %s: %d videos", len(shards), out_path, total)
    return out_path


def _same_arrays(a: h5py.Group, b: h5py.Group) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[name][()], b[name][()]) for name in a)
