"""The failure log of an extraction run: ``OUT.failures.jsonl``, one entry per failed video.

A rerun retries each failed video once; after ``MAX_ATTEMPTS`` failures it is skipped until
``RunOptions.retry_failed`` asks for it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from masn.atomic import write_text
from masn.extract.video.inputs import Stage
from masn.extract.video.sources import VideoSource

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""Failures after which reruns skip a video (unless ``RunOptions.retry_failed``)."""


def failures_path(store: Path) -> Path:
    """Where the failure log of the store ``store`` lives: ``<store>.failures.jsonl``."""
    return store.with_name(store.name + ".failures.jsonl")


class FailureLog:
    """``OUT.failures.jsonl``: one JSON line per video that failed and is not stored.

    Entries hold key, path, stage (decode, sample, preprocess, network, write), reason,
    attempts (failures so far) and time (UTC). The file is rewritten atomically (temporary file,
    fsync, rename) on every change, so it never repeats a key nor holds a half line; it is
    removed when no failure is left.
    """

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            bad = 0
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["key"])] = entry
                except (ValueError, TypeError, KeyError):
                    bad += 1
            if bad:
                log.warning("%s: ignored %d unreadable lines", path, bad)

    def attempts(self, key: str) -> int:
        """How many times ``key`` has failed so far (0 if it has no entry)."""
        return int(self.entries.get(key, {}).get("attempts", 0))

    def record(self, source: VideoSource, stage: Stage, reason: str) -> None:
        """Records one more failure of ``source``."""
        self.entries[source.key] = {
            "key": source.key,
            "path": str(source.path),
            "stage": stage,
            "reason": reason,
            "attempts": self.attempts(source.key) + 1,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._save()

    def forget(self, keys: Iterable[str]) -> None:
        """Drops the entries of ``keys`` (videos now stored)."""
        gone = [key for key in keys if key in self.entries]
        for key in gone:
            del self.entries[key]
        if gone:
            self._save()

    def _save(self) -> None:
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        write_text(self.path, "".join(json.dumps(entry) + "\n" for entry in self.entries.values()))
