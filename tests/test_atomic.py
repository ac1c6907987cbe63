"""Crash-safe file replacement (masn/atomic.py)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from masn import atomic
from masn.errors import DiskFull, InvalidInput, UserError


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


def test_a_full_disk_names_the_file_and_the_space_it_needs(tmp_path, monkeypatch) -> None:
    """ENOSPC from Python, torch.save's C++ stream error and h5py's errno text are one line
    (DiskFull, a user error) naming the file, its size and the free space; the old file stays
    and no temporary is left."""
    target = tmp_path / "failures.jsonl"
    atomic.write_text(target, "old\n")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", full)
        with pytest.raises(DiskFull) as caught:
            atomic.write_text(target, "x" * 1500)
    message = str(caught.value)
    assert message.startswith(f"the disk is full: writing {target} needs about 1.5 kB (")
    assert re.search(r"\(\d+\.\d [kMGT]B free\); free some space there", message), message
    assert "\n" not in message and isinstance(caught.value, UserError)
    assert target.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == [target.name]

    for error in (
        RuntimeError("basic_ios::clear: iostream error"),  # torch.save on a full disk
        OSError("Can't write data (file write failed: errno = 28, error message = 'No space')"),
    ):
        with (
            pytest.raises(DiskFull, match=r"writing .*best\.pt needs about 3\.0 MB"),
            atomic.replacing(tmp_path / "best.pt", 3_000_000),
        ):
            raise error
    with pytest.raises(RuntimeError, match=r"^a bug$"), atomic.replacing(tmp_path / "x"):
        raise RuntimeError("a bug")  # anything else passes unchanged


def test_writable_folder_creates_or_refuses_in_one_line(tmp_path: Path) -> None:
    assert atomic.writable_folder(tmp_path / "a" / "b", "x", "y").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInput, match=r"^cannot: .*file is not a folder; choose$"):
        atomic.writable_folder(tmp_path / "file", "cannot", "choose")
    read_only = Path("/sys") if os.geteuid() == 0 else tmp_path / "read-only"
    if read_only != Path("/sys"):
        read_only.mkdir(mode=0o555)
    with pytest.raises(InvalidInput, match=r"does not accept new files \(.*\); choose$"):
        atomic.writable_folder(read_only, "cannot", "choose")
    with pytest.raises(InvalidInput, match=r"cannot create its folder .*/run \(.*\); choose$"):
        atomic.writable_folder(read_only / "run", "cannot", "choose")
