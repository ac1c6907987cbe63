"""Crash-safe file replacement: a file is either its old version or its complete new one.

Everything we write that a later run trusts (feature stores and their per-video parts,
checkpoints, the weights lock file, converted weights, settings records) goes through
:func:`replacing`: the new content is written under a temporary name in the same folder,
flushed to disk, and renamed over the target, so ``kill -9`` or a power cut at any moment
leaves the old file or the new one, never a torn one. A temporary file left by a killed
process is removed by the next writer of the same target.

A full disk is one line for the user, whoever writes (:func:`reporting_full_disk`, which
:func:`replacing` applies): the file, the space it needs and the space free, instead of an
``OSError`` or torch's ``basic_ios::clear: iostream error``. :func:`writable_folder` checks an
output folder before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from masn.errors import DiskFull, InvalidInput

log = logging.getLogger(__name__)

# How a full disk reads: errno (Python, and h5py's messages), and the C++ stream errors of
# torch.save's zip writer.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_WORDS = (
    "No space left on device",
    "Disk quota exceeded",
    "errno = 28",
    "basic_ios::clear: iostream error",
    "file write failed",
    "unexpected pos",
)


def fsync(path: str | os.PathLike[str]) -> None:
    """Flushes a file's (or a folder's) content and metadata to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> None:
    """Removes the temporary files of ``path`` left by processes that no longer run."""
    path = Path(path)
    prefix, suffix = f".{path.name}.", ".tmp"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            pid = entry.name[len(prefix) : -len(suffix)]
            name_matches = entry.name.startswith(prefix) and entry.name.endswith(suffix)
            if name_matches and pid.isdigit() and not pid_alive(int(pid)):
                log.info("removing %s, left by an interrupted run", entry.path)
                Path(entry.path).unlink(missing_ok=True)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` says that the disk or the quota is full."""
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return True
    if isinstance(error, (OSError, RuntimeError)):
        text = str(error)
        return any(words in text for words in _FULL_WORDS)
    return False


def size_text(size: float) -> str:
    """A byte count for people: 812 bytes, 3.4 MB, 1.2 GB."""
    if size < 1000:
        return f"{size:.0f} bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def _free_space(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


@contextlib.contextmanager
def reporting_full_disk(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[None]:
    """Turns a full disk while writing ``path`` (about ``needed`` bytes, when known) into
    :class:`~masn.errors.DiskFull`: one line naming the file, the space it needs and the space
    free. Other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as error:
        if not disk_full(error):
            raise
        path = Path(path)
        free = _free_space(path.parent)
        space = f"about {size_text(needed)}" if needed else "more space"
        room = f" ({size_text(free)} free)" if free is not None else ""
        raise DiskFull(
            f"the disk is full: writing {path} needs {space}{room}; free some space there (or "
            "write elsewhere) and run the command again: work already saved is kept"
        ) from error


@contextlib.contextmanager
def removed_if_left_empty(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Runs the body; afterwards removes ``folder`` if it did not exist before and is empty, so
    that a refused or failed start leaves no empty folder behind."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        yield folder
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: the body wrote into it
                folder.rmdir()


def writable_folder(folder: str | os.PathLike[str], what: str, advice: str) -> Path:
    """Creates ``folder`` if absent and checks that it accepts new files, before any work
    starts; otherwise an ``InvalidInput`` "``what``: <problem>; ``advice``"."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{what}: {folder} is not a folder; {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InvalidInput(f"{what}: {folder} is not a folder; {advice}") from None
    except OSError as error:
        raise InvalidInput(
            f"{what}: cannot create its folder {folder} ({error.strerror or error}); {advice}"
        ) from None
    probe = folder / f".probe.{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise InvalidInput(
            f"{what}: its folder {folder} does not accept new files "
            f"({error.strerror or error}); {advice}"
        ) from None
    return folder


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` on success.

    The caller writes the complete file at the yielded path (and closes it); then it is
    fsynced and renamed over ``path``, and the folder is fsynced. On an exception the
    temporary file is removed and ``path`` is left untouched; a full disk is a
    :class:`~masn.errors.DiskFull` naming ``path`` and ``needed`` (its size in bytes, when the
    caller knows it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = _temporary(path, os.getpid())
    try:
        with reporting_full_disk(path, needed):
            yield temporary
            fsync(temporary)
            os.replace(temporary, path)
            fsync(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replaces ``path`` with ``text`` (UTF-8), crash-safely; returns the path."""
    path = Path(path)
    data = text.encode("utf-8")
    with replacing(path, len(data)) as temporary:
        temporary.write_bytes(data)
    return path
