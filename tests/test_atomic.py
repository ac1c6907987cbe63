"""Crash-safe file replacement (masn/atomic.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from masn import atomic


def test_replacing_swaps_in_the_complete_file_only(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError, match="boom"), atomic.replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    with atomic.replacing(target) as temporary:
        assert temporary.parent == target.parent and temporary != target
        temporary.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new"


def test_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "store.h5"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".store.h5.{int(dead.stdout)}.tmp"
    live = tmp_path / f".store.h5.{os.getppid()}.tmp"
    other = tmp_path / ".other.h5.1.tmp"
    for path in (stale, live, other):
        path.write_text("x")
    atomic.write_text(target, "done")
    assert not stale.exists() and live.exists() and other.exists()
