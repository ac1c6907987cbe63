"""Crash-safe file replacement: a file is either its old version or its complete new one.

Everything we write that a later run trusts (feature stores and their per-video parts,
checkpoints, the weights lock file, converted weights, settings records) goes through
:func:`replacing`: the new content is written under a temporary name in the same folder,
flushed to disk, and renamed over the target, so ``kill -9`` or a power cut at any moment
leaves the old file or the new one, never a torn one. A temporary file left by a killed
process is removed by the next writer of the same target.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def fsync(path: str | os.PathLike[str]) -> None:
    """Flushes a file's (or a folder's) content and metadata to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _pid_alive(pid: int) -> bool:
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
            if name_matches and pid.isdigit() and not _pid_alive(int(pid)):
                log.info("removing %s, left by an interrupted run", entry.path)
                Path(entry.path).unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` on success.

    The caller writes the complete file at the yielded path (and closes it); then it is
    fsynced and renamed over ``path``, and the folder is fsynced. On an exception the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = _temporary(path, os.getpid())
    try:
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
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
