"""Training metrics as JSON lines (``metrics.jsonl``) and TensorBoard scalars (``tensorboard/``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Appends events to the run folder; a resumed run continues the same files."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._board = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def event(self, kind: str, step: int, **values: Any) -> None:
        """One line ``{"event", "step", "time", **values}``; numbers also go to TensorBoard."""
        line = {"event": kind, "step": step, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        for name, value in _scalars(values):
            self._board.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self._file.close()
        self._board.close()


def _scalars(values: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """Flattens nested dicts of numbers into ("a/b", value) pairs."""
    found = []
    for name, value in values.items():
        if isinstance(value, dict):
            found += _scalars(value, f"{prefix}{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((f"{prefix}{name}", float(value)))
    return found
