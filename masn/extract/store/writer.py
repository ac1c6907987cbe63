"""Writing a feature store crash-safely: ``StoreWriter``, its one-writer lock (``store_lock``,
a ``masn.locking`` lock that names its holder), and the checks of an output path before any
work starts (``check_output``).

HDF5 files are not crash-safe while open for writing, so nothing ever appends to a finished
store. ``StoreWriter`` commits each video as its own small file in ``<store>.parts/``
(``parts.PartWriter``); ``consolidate`` packs store + parts into a new file that atomically
replaces the store. A ``kill -9`` therefore loses only the videos in flight, and readers only
ever see complete files.

A file where a store should be that HDF5 cannot read (cut short, emptied, overwritten) is a
``DamagedStore`` error for readers; a ``StoreWriter`` moves it aside to
``<store>.corrupt-<UTC time>`` (never deleting it) and rebuilds the store from the committed
parts, so the videos that were only in it are extracted again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from masn.atomic import fsync, remove_stale_temporaries, writable_folder, write_text
from masn.errors import InvalidInput
from masn.extract.store.parts import PartWriter, committed_parts, copy_part
from masn.extract.store.schema import (
    FeatureDtype,
    Provenance,
    VideoRecord,
    check_dtype,
    prepare_arrays,
    record_metadata,
)
from masn.extract.store.store_file import (
    DamagedStore,
    new_store,
    open_store_file,
    read_provenance,
    store_keys,
)
from masn.locking import ExclusiveLock

log = logging.getLogger(__name__)


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuses an output path a store cannot be written to, before any work starts.

    The path must not be a folder or a special file (such as /dev/null); its folder is created
    when missing and must accept new files (the store is replaced by renaming a new file into
    place), and no other process may be writing it (``InUse``).
    """
    path = Path(path)
    where = f"cannot write the feature store {path}:"
    if path.is_dir():
        example = path / "features.h5"
        raise InvalidInput(f"{where} it is a folder; give a file path such as {example}")
    if path.exists() and not path.is_file():
        raise InvalidInput(f"{where} it is not a regular file; give a path such as features.h5")
    writable_folder(path.parent, where.rstrip(":"), "choose a writable output folder")
    store_lock(path).check_free()


def store_lock(store: Path) -> ExclusiveLock:
    """The one-writer lock of ``store`` (in its staging folder ``<store>.parts``)."""
    return ExclusiveLock(
        store.with_name(store.name + ".parts") / ".lock",
        f"writing {store}",
        "wait for it to finish or write elsewhere",
    )


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
        settings: str = "",
    ):
        check_dtype(dtype)
        self.path = Path(store_path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.dtype: FeatureDtype = dtype
        self.provenance = Provenance.new(config, weights, settings)
        check_output(self.path)
        self.parts_dir.mkdir(exist_ok=True)
        self._lock = store_lock(self.path)
        self._lock.acquire()
        try:
            for stale in self.parts_dir.glob(".*.tmp"):
                log.info("removing %s, left by an interrupted run", stale)
                stale.unlink()
            remove_stale_temporaries(self.path)
            self._set_aside_if_damaged()
            self._check_origin()
            self._done = set(committed_parts(self.parts_dir)) | set(store_keys(self.path))
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
        if not self._lock.held:
            raise RuntimeError(f"the writer of {self.path} is closed")
        with self._done_lock:
            if key in self._done:
                raise ValueError(
                    f"video {key!r} is already in {self.path}; skip done_keys() on reruns"
                )
        return PartWriter(self.parts_dir, key, self.dtype, self._committed)

    def write(self, record: VideoRecord) -> None:
        """Validates and commits one whole video (a part file: temporary name, fsync, rename)."""
        arrays = prepare_arrays(record, self.dtype)
        with self.begin(record.key) as part:
            part.append(arrays)
            part.commit(**record_metadata(record))

    def _committed(self, key: str) -> None:
        with self._done_lock:
            self._done.add(key)

    def consolidate(self) -> Path:
        """Packs the store and all committed parts into the store file, then deletes the parts.

        Safe to interrupt: the old store and the parts stay intact until the new store has
        replaced the old one, and parts already packed are simply packed again by a rerun.
        Needs free disk space for a second copy of the store.
        """
        if not self._lock.held:
            raise RuntimeError(f"the writer of {self.path} is closed")
        parts = committed_parts(self.parts_dir)
        if not parts and self.path.exists():
            return self.path
        created = read_provenance(self.path)[0].created if self.path.exists() else None
        provenance = replace(self.provenance, created=created or self._parts_created())
        needed = sum(part.stat().st_size for part in parts.values())
        needed += self.path.stat().st_size if self.path.exists() else 0
        with new_store(self.path, provenance, self.dtype, needed) as videos:
            for part in parts.values():
                copy_part(part, videos)
            if self.path.exists():
                with open_store_file(self.path) as old:
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
        if not self._lock.held:
            return
        empty = not any(name.endswith(".h5") for name in os.listdir(self.parts_dir))
        if empty:
            (self.parts_dir / "provenance.json").unlink(missing_ok=True)
        self._lock.release(remove=empty)
        if empty:
            with contextlib.suppress(OSError):
                self.parts_dir.rmdir()

    def _set_aside_if_damaged(self) -> None:
        """Moves a store file that cannot be read to ``<store>.corrupt-<UTC time>``."""
        if not self.path.exists():
            return
        try:
            store_keys(self.path)
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
            origins.append((self.path, *read_provenance(self.path)))
        if record.exists():
            saved = json.loads(record.read_text())
            stored = Provenance.stored(saved["config"], saved["weights"], saved["created"])
            origins.append((record, stored, saved["feature_dtype"]))
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
