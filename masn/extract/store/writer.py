"""Writing a feature store crash-safely: ``StoreWriter``, its one-writer lock, and the checks
of an output path before any work starts (``check_output``).

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
import errno
import fcntl
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from masn.atomic import fsync, remove_stale_temporaries, write_text
from masn.errors import InUse, InvalidInput
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
    atomic_hdf5,
    init_store,
    open_store_file,
    read_provenance,
    store_keys,
)

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
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InvalidInput(f"{where} {folder} is not a folder") from None
    except OSError as error:
        raise InvalidInput(
            f"{where} cannot create its folder {folder} ({error.strerror}); choose a writable "
            "output folder"
        ) from None
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
        self._lock_fd: int | None = None
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
        if self._lock_fd is None:
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
        if self._lock_fd is None:
            raise RuntimeError(f"the writer of {self.path} is closed")
        parts = committed_parts(self.parts_dir)
        if not parts and self.path.exists():
            return self.path
        created = read_provenance(self.path)[0].created if self.path.exists() else None
        provenance = replace(self.provenance, created=created or self._parts_created())
        with atomic_hdf5(self.path) as out:
            videos = init_store(out, provenance, self.dtype)
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
        if self._lock_fd is None:
            return
        if not any(name.endswith(".h5") for name in os.listdir(self.parts_dir)):
            for name in ("provenance.json", ".lock"):
                (self.parts_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.parts_dir.rmdir()
        os.close(self._lock_fd)
        self._lock_fd = None

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
