"""The one lock of the package (masn/locking.py): refusals name the holder, a record left by a
killed holder is taken over with a warning, a waiting process gets the lock when it is freed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from masn.errors import InUse
from masn.locking import ExclusiveLock, read_holder


def _lock(path: Path) -> ExclusiveLock:
    return ExclusiveLock(path, "writing the thing", "wait for it or write elsewhere")


def test_a_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path: Path) -> None:
    path = tmp_path / "run" / ".lock"
    with _lock(path):
        holder = read_holder(path)
        assert holder is not None and holder.pid == os.getpid()
        expected = f"another process (pid {os.getpid()} on host {socket.gethostname()}, since "
        with pytest.raises(InUse, match=r"^" + expected.replace("(", r"\(")) as caught:
            _lock(path).acquire()
        assert str(caught.value).endswith("is writing the thing; wait for it or write elsewhere")
        with pytest.raises(InUse, match="is writing the thing"):
            _lock(path).check_free()
    assert not path.exists()  # released: removed
    _lock(path).check_free()
    kept = _lock(path)
    kept.acquire()
    kept.release(remove=False)
    assert path.exists() and read_holder(path) is None  # kept, but with no holder recorded


def test_a_lock_left_by_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog) -> None:
    path = tmp_path / ".lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from masn.locking import ExclusiveLock; "
            "ExclusiveLock(sys.argv[1], 'x', 'y').acquire(); print('held', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline() == "held\n"
    with pytest.raises(InUse, match=f"pid {child.pid} on host"):
        _lock(path).acquire()
    child.kill()
    child.wait()
    assert json.loads(path.read_text())["pid"] == child.pid  # its record is left behind
    with _lock(path):
        assert read_holder(path).pid == os.getpid()
    assert f"the process that was writing the thing (pid {child.pid} on host" in caplog.text
    assert "ended without releasing it (killed?)" in caplog.text


def test_a_waiting_process_takes_the_lock_when_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    first, order = _lock(path), []
    first.acquire()

    def second() -> None:
        with _lock(path).waiting():
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    order.append("first")
    first.release()
    thread.join(10)
    assert order == ["first", "second"]
