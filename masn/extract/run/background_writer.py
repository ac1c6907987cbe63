"""The background writer of an extraction run, and the orders the run loop sends it: rows of a
video, commit it, abort it."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from masn.extract.store.parts import PartWriter
from masn.extract.store.writer import StoreWriter
from masn.extract.video.inputs import unexpected

log = logging.getLogger(__name__)


@dataclass
class Rows:
    """The next rows of a video for its part file."""

    key: str
    arrays: dict[str, np.ndarray]


@dataclass
class Commit:
    """A video's last rows were handed over: commit its part with this metadata."""

    key: str
    metadata: dict[str, Any]


@dataclass
class Abort:
    """A video failed elsewhere: drop its part."""

    key: str


@dataclass
class Outcome:
    """What the writer thread did with a video: stored, or failed with a reason."""

    key: str
    reason: str | None = None


def _write_reason(error: Exception) -> str:
    if isinstance(error, ValueError):  # the store's checks: shapes, values, dtype range
        return str(error)
    if isinstance(error, OSError):
        return f"cannot write the part file: {error.strerror or error}"
    return unexpected(error)


class BackgroundWriter:
    """Appends the videos' rows to their part files and commits each part once its video is
    complete, on a thread, so the networks never wait for the disk. A video whose writing fails
    is aborted and reported (``results``); the others go on."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.queue: queue.Queue[Rows | Commit | Abort | None] = queue.Queue(maxsize=16)
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        parts: dict[str, PartWriter] = {}
        failed: set[str] = set()
        try:
            while (order := self.queue.get()) is not None:
                if isinstance(order, Abort):
                    if (part := parts.pop(order.key, None)) is not None:
                        part.abort()
                    continue
                if order.key in failed:
                    continue
                try:
                    if isinstance(order, Rows):
                        if order.key not in parts:
                            parts[order.key] = self.writer.begin(order.key)
                        parts[order.key].append(order.arrays)
                    else:
                        parts.pop(order.key).commit(**order.metadata)
                        self.outcomes.put(Outcome(order.key))
                except Exception as error:
                    if not isinstance(error, (ValueError, OSError)):
                        log.error("writing %s failed", order.key, exc_info=True)
                    if (part := parts.pop(order.key, None)) is not None:
                        part.abort()
                    failed.add(order.key)
                    self.outcomes.put(Outcome(order.key, _write_reason(error)))
        except BaseException as error:  # reported to the main thread
            self.error = error
        finally:
            for part in parts.values():
                part.abort()

    def put(self, order: Rows | Commit | Abort) -> None:
        """Queues an order (waits while the queue is full); raises if the thread failed."""
        self._check()
        self.queue.put(order)

    def results(self) -> list[Outcome]:
        """The outcomes reported since the last call."""
        found = []
        while True:
            try:
                found.append(self.outcomes.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        """Writes what is queued, then stops the thread; raises if the thread itself failed."""
        self.stop()
        self._check()

    def stop(self) -> None:
        """Stops the thread after what is queued (parts not committed by then are aborted)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the writer of {self.writer.path} failed") from self.error
