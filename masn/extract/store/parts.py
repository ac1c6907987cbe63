"""Part files: one committed video each, in ``<store>.parts/``, written by ``PartWriter``.

A part is a small store-layout HDF5 file (a ``videos`` group with one video) named
``<escaped key>.h5``, or ``#<sha256 of the key>.h5`` when the escaped key is too long for a file
name. ``PartWriter`` streams a video's rows to raw staging files (memory does not grow with the
video's length), then copies them into the contiguous datasets of a temporary part file, fsyncs
it and renames it into place, so a part file is either complete or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

import h5py
import numpy as np

from masn.atomic import fsync
from masn.errors import InvalidInput
from masn.extract.store.schema import (
    FIELDS,
    REQUIRED_FIELDS,
    FeatureDtype,
    check_shapes,
    escape_key,
    stored_array,
    write_metadata,
)

# Longest escaped key used verbatim as a part file name (file names are limited to 255 bytes).
_MAX_PART_STEM = 200
# Bytes per chunk of a part's staging datasets, and per block when they are copied at commit.
_BLOCK_BYTES = 1 << 20


class PartWriter:
    """One video's part file, written block by block (rows in position order).

    Each field's rows are appended to a raw staging file as they come, so a video of any length
    is written with bounded memory; ``commit`` copies them block by block into the contiguous
    datasets of a new part file (the store's layout), fsyncs it and renames it into the parts
    folder, then calls ``on_commit(key)``. ``abort`` (also on leaving ``with`` uncommitted)
    removes the temporary files, as does the next writer after a ``kill -9``. Get one from
    ``StoreWriter.begin``.
    """

    def __init__(
        self,
        parts_dir: Path,
        key: str,
        dtype: FeatureDtype,
        on_commit: Callable[[str], None],
    ):
        self.key = key
        self.rows = 0
        stem = part_stem(key)
        self._dtype: FeatureDtype = dtype
        self._on_commit = on_commit
        self._prefix = parts_dir / f".{stem}.{os.getpid()}"
        self._final = parts_dir / f"{stem}.h5"
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
        check_shapes(self.key, given, self._sizes)
        for name, array in given.items():
            stored = stored_array(self.key, name, array, self._dtype)
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
                write_metadata(group, self.key, metadata)
            fsync(temporary)
            os.replace(temporary, self._final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        finally:
            self.abort()  # the staging files
        self._on_commit(self.key)

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


def part_stem(key: str) -> str:
    """Escaped key, or "#" + its sha256 when too long for a file name ("#" is always escaped)."""
    name = escape_key(key)
    return name if len(name) <= _MAX_PART_STEM else "#" + hashlib.sha256(key.encode()).hexdigest()


def committed_parts(parts_dir: Path) -> dict[str, Path]:
    """Video key -> its committed part file in ``parts_dir``."""
    parts = {}
    for entry in os.scandir(parts_dir):
        if entry.name.endswith(".h5"):
            stem = entry.name[: -len(".h5")]
            key = _part_key(Path(entry.path)) if stem.startswith("#") else unquote(stem)
            parts[key] = Path(entry.path)
    return parts


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


def copy_part(part: Path, videos: h5py.Group) -> None:
    """Copies the video of a committed part into a store's open ``videos`` group."""
    try:
        with h5py.File(part, "r", locking=False) as file:
            for name, group in file["videos"].items():
                file.copy(group, videos, name)
    except (OSError, KeyError) as error:
        raise _unreadable_part(part, error) from error
