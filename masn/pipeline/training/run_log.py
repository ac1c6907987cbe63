"""Training metrics as JSON lines (``metrics.jsonl``) and TensorBoard scalars (``tensorboard/``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from masn.atomic import reporting_full_disk, write_text


class RunLog:
    """Appends events to the run folder; a resumed run continues the same files.

    ``after``: the step the run starts from (0 for a new run). Events of later steps, written
    by an interrupted run after its last checkpoint (or by a start that failed), are dropped,
    so that every step is logged once: metrics.jsonl keeps only its earlier rows, TensorBoard
    purges the later ones.
    """

    def __init__(self, folder: Path, after: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in _lines(self.path) if json.loads(line)["step"] <= after]
            write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = self.path.open("a", encoding="utf-8")
        self._board = SummaryWriter(log_dir=str(folder / "tensorboard"), purge_step=after + 1)

    def event(self, kind: str, step: int, **values: Any) -> None:
        """One line ``{"event", "step", "time", **values}``; numbers also go to TensorBoard."""
        line = {"event": kind, "step": step, "time": round(time.time(), 3), **values}
        with reporting_full_disk(self.path):
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
        for name, value in _scalars(values):
            self._board.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        self._board.close()


def _lines(path: Path) -> list[str]:
    """The complete JSON lines of ``path`` (a line cut short by a crash is left out)."""
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            continue
        found.append(line)
    return found


def _scalars(values: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Flattens nested dicts of numbers into ("a/b", value) pairs."""
    found = []
    for name, value in values.items():
        if isinstance(value, dict):
            found += _scalars(value, f"{prefix}{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((f"{prefix}{name}", float(value)))
    return found
