"""One process at a time: an exclusive lock file that names its holder.

The one lock of the package, used wherever two processes must not write the same thing: a
feature store (``<store>.parts/.lock``), a training run folder (``RUN/.lock``) and the weights
cache (``.lock``, where the second process waits its turn). The lock is ``flock`` on the file,
so the system releases it when its holder ends in any way, ``kill -9`` included; it is never
left held by a dead process. The file records the holder (pid, host, start time), so that a
refusal names who holds it, and a record left behind by a holder that did not release it (a
killed run) is recognised when the next process takes the lock, with a warning. On file
systems without file locks (some network mounts) the record alone decides: a live process on
this host holds the lock; anything else is taken over with a warning.

Why flock and not a library (``filelock``, ``fasteners``): both wrap the same call, and neither
records the holder, which is what the messages need.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from masn.atomic import pid_alive
from masn.errors import InUse

log = logging.getLogger(__name__)

_NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


@dataclass(frozen=True)
class Holder:
    """The process that holds (or held) a lock, as its lock file records it."""

    pid: int
    host: str
    since: str

    @classmethod
    def me(cls) -> Holder:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), now)

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host}, since {self.since}"

    def alive_here(self) -> bool:
        """The holder is a running process of this host (other than this one)."""
        mine = self.pid == os.getpid()
        return self.host == socket.gethostname() and not mine and pid_alive(self.pid)


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in the lock file ``path`` (None: absent, released or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class ExclusiveLock:
    """An exclusive lock on the file ``path`` for the work described by ``doing`` (e.g.
    "writing the feature store x.h5"); ``advice`` says what to do when another process holds
    it. Use as a context manager, or :meth:`acquire` and :meth:`release`."""

    def __init__(self, path: str | os.PathLike[str], doing: str, advice: str):
        self.path, self.doing, self.advice = Path(path), doing, advice
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def refusal(self, holder: Holder | None) -> InUse:
        """The error saying who holds the lock and what to do."""
        who = f"another process ({holder})" if holder else "another process"
        return InUse(f"{who} is {self.doing}; {self.advice}")

    def check_free(self) -> None:
        """Raises ``InUse`` when another process holds the lock now (an early check before any
        work; :meth:`acquire` settles races)."""
        try:
            descriptor = os.open(self.path, os.O_RDWR)
        except OSError:
            return  # no lock file: nobody holds it
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self.refusal(read_holder(self.path)) from None
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            holder = read_holder(self.path)
            if holder is not None and holder.alive_here():
                raise self.refusal(holder) from None
        finally:
            os.close(descriptor)

    def acquire(self, wait: bool = False) -> None:
        """Takes the lock; raises ``InUse`` naming the holder (``wait``: waits for it instead)."""
        if self.held:
            raise RuntimeError(f"{self.path} is already locked by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(descriptor, wait)
            except BaseException:
                os.close(descriptor)
                raise
            # A holder that finished may have deleted the file between our open and flock.
            if not locked or (
                self.path.exists() and os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            ):
                break
            os.close(descriptor)
        self._descriptor = descriptor
        self._record(locked)

    def _flock(self, descriptor: int, wait: bool) -> bool:
        """flock; False where the file system has no locks (the record decides then)."""
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = read_holder(self.path)
            if not wait:
                raise self.refusal(holder) from None
            log.info("waiting for %s, which is %s", holder or "another process", self.doing)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            return True
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
        holder = read_holder(self.path)
        if holder is not None and holder.alive_here():
            raise self.refusal(holder)
        log.warning(
            "no file locks on the file system of %s: make sure no other process is %s",
            self.path,
            self.doing,
        )
        return False

    def _record(self, locked: bool) -> None:
        """Notes a record left by a holder that did not release, then writes ours."""
        assert self._descriptor is not None
        left = read_holder(self.path)
        if left is not None and locked:
            log.warning(
                "taking over %s: the process that was %s (%s) ended without releasing it (killed?)",
                self.path,
                self.doing,
                left,
            )
        record = json.dumps(Holder.me().__dict__).encode()
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, record, 0)

    def release(self, remove: bool = True) -> None:
        """Releases the lock; the file is removed (``remove``) or emptied, so that the next
        holder finds no record left behind."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        try:
            if remove:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)

    def __enter__(self) -> ExclusiveLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[ExclusiveLock]:
        """Holds the lock, waiting for another holder to finish first."""
        self.acquire(wait=True)
        try:
            yield self
        finally:
            self.release()
