"""Writing a store: reruns, crash leftovers, provenance, the one-writer lock, kill -9, damaged
stores moved aside, and output paths checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from masn.atomic import size_text
from masn.errors import DiskFull, InUse, InvalidInput
from masn.extract.store import writer as writer_module
from masn.extract.store.merge import merge_stores
from masn.extract.store.reader import FeatureStore
from masn.extract.store.writer import StoreWriter, check_output
from tests.builders import (
    ODD_KEYS,
    STORE_CONFIG,
    STORE_WEIGHTS,
    assert_stored,
    child_env,
    damage_store,
    synthetic_record,
    write_store,
)
from tests.conftest import REPO


def test_done_keys_after_partial_runs(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        for key in ODD_KEYS[:2]:
            writer.write(synthetic_record(key))
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        assert writer.done_keys() == set(ODD_KEYS[:2])
        writer.write(synthetic_record(ODD_KEYS[2]))
        writer.consolidate()
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        assert writer.done_keys() == set(ODD_KEYS[:3])
        for key in ODD_KEYS[3:]:
            writer.write(synthetic_record(key))
        assert writer.done_keys() == set(ODD_KEYS)
    assert len(FeatureStore(path)) == 3
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.consolidate()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(ODD_KEYS)
        assert_stored(store.read(ODD_KEYS[4]), synthetic_record(ODD_KEYS[4]))


def test_leftovers_of_a_crash_are_cleaned_and_ignored(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, ODD_KEYS[:2])
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record(ODD_KEYS[2]))
    parts = tmp_path / "s.h5.parts"
    stale_part = parts / f".{'half%2Fwritten'}.99999999.tmp"
    stale_part.write_bytes(b"\x89HDF\r\n half a video")
    stale_store = tmp_path / ".s.h5.99999999.tmp"  # masn.atomic's name for a killed pid 99999999
    stale_store.write_bytes(b"\x89HDF\r\n half a store")
    stale_staging = parts / ".half%2Fwritten.99999999.appearance.tmp"  # a streamed video's rows
    stale_staging.write_bytes(b"rows")
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        assert not stale_part.exists() and not stale_store.exists()
        assert not stale_staging.exists()
        assert writer.done_keys() == set(ODD_KEYS[:3])
        writer.consolidate()
    assert not parts.exists()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(ODD_KEYS[:3])


def test_consolidation_killed_after_the_rename_is_redone(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record(ODD_KEYS[0]))
        writer.write(synthetic_record(ODD_KEYS[1]))
        parts = {p.name: p.read_bytes() for p in writer.parts_dir.iterdir() if p.suffix == ".h5"}
        writer.consolidate()
        for name, data in parts.items():  # as if killed before the parts were deleted
            (writer.parts_dir / name).write_bytes(data)
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        assert writer.done_keys() == set(ODD_KEYS[:2])
        writer.consolidate()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(ODD_KEYS[:2])
        assert_stored(store.read(ODD_KEYS[1]), synthetic_record(ODD_KEYS[1]))


def test_provenance_mismatch_is_refused(tmp_path):
    path = write_store(tmp_path / "s.h5", ["a"])
    with pytest.raises(ValueError, match=r"config \(fps\).*another output path"):
        StoreWriter(path, {**STORE_CONFIG, "fps": 5}, STORE_WEIGHTS)
    with pytest.raises(ValueError, match=r"weights \(motion\)"):
        StoreWriter(path, STORE_CONFIG, {**STORE_WEIGHTS, "motion": "random"})
    with pytest.raises(ValueError, match="feature dtype"):
        StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS, dtype="float32")
    with StoreWriter(tmp_path / "parts_only.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record("a"))
    with pytest.raises(ValueError, match=r"provenance\.json.*config \(sample_every\)"):
        StoreWriter(tmp_path / "parts_only.h5", {**STORE_CONFIG, "sample_every": 2}, STORE_WEIGHTS)


def test_one_writer_at_a_time(tmp_path):
    with (
        StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS),
        pytest.raises(RuntimeError, match=r"another process \(pid \d+ on host .*\) is writing"),
    ):
        StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS)


CHILD = """
import sys
from masn.extract.store.writer import StoreWriter
from tests.builders import STORE_CONFIG, STORE_WEIGHTS, synthetic_record

path, count = sys.argv[1], int(sys.argv[2])
with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
    done = writer.done_keys()
    for i in range(count):
        key = f"clip/{i:04d}"
        if key not in done:
            writer.write(synthetic_record(key, frames=3))
            print(key, flush=True)
    writer.consolidate()
"""


def _run_child(path: Path, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(count)],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkill_loses_only_videos_in_flight(tmp_path):
    path, count = tmp_path / "s.h5", 200
    parts = tmp_path / "s.h5.parts"
    child = _run_child(path, count)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.poll() is None:
        names = os.listdir(parts) if parts.is_dir() else []
        # Aim the kill at a part being written (its temporary file exists).
        if sum(name.endswith(".h5") for name in names) >= 10 and any(".tmp" in n for n in names):
            break
        time.sleep(0.001)
    assert child.poll() is None, "the writer finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    printed = child.communicate()[0].split()
    assert child.returncode == -signal.SIGKILL

    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        done = writer.done_keys()
        # Everything reported is committed; at most the one being reported when killed is extra.
        assert set(printed) <= done and len(done - set(printed)) <= 1
        assert len(done) < count and not list(parts.glob(".*.tmp"))
        writer.consolidate()
    with FeatureStore(path) as store:
        assert set(store.keys()) == done
        for key in done:
            assert_stored(store.read(key), synthetic_record(key, frames=3))

    rerun = _run_child(path, count)
    written = rerun.communicate(timeout=60)[0].split()
    assert rerun.returncode == 0
    expected = {f"clip/{i:04d}" for i in range(count)}
    assert set(written) == expected - done and len(written) == len(set(written))
    with FeatureStore(path) as store:
        assert set(store.keys()) == expected


@pytest.mark.parametrize("how", ["truncated", "text"])
def test_a_writer_moves_a_damaged_store_aside_and_keeps_the_parts(tmp_path, how, caplog):
    path = write_store(tmp_path / "s.h5", ODD_KEYS[:2])
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record(ODD_KEYS[2]))  # committed, not consolidated
    damage_store(path, how)
    damaged = path.read_bytes()
    with caplog.at_level("WARNING"), StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        assert writer.done_keys() == {ODD_KEYS[2]}  # the videos only in the damaged file are redone
        writer.write(synthetic_record(ODD_KEYS[0]))
        writer.consolidate()
    (aside,) = tmp_path.glob("s.h5.corrupt-*")
    assert aside.read_bytes() == damaged
    assert "is damaged" in caplog.text and str(aside) in caplog.text
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted([ODD_KEYS[0], ODD_KEYS[2]])
        assert_stored(store.read(ODD_KEYS[2]), synthetic_record(ODD_KEYS[2]))


def test_a_foreign_hdf5_file_is_refused_not_moved(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as file:
        file["x"] = [1, 2, 3]
    with pytest.raises(InvalidInput, match="not a MASN feature store"):
        StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_output_paths_are_checked_before_any_work(tmp_path):
    check_output(tmp_path / "fine.h5")
    with pytest.raises(InvalidInput, match="is a folder; give a file path such as"):
        check_output(tmp_path)
    with pytest.raises(InvalidInput, match="not a regular file"):
        check_output(Path("/dev/null"))
    check_output(tmp_path / "new" / "folders" / "s.h5")  # missing folders are created
    assert (tmp_path / "new" / "folders").is_dir()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InvalidInput, match="a-file is not a folder"):
        check_output(tmp_path / "a-file" / "s.h5")
    with pytest.raises(InvalidInput, match=r"cannot create its folder .*\(Not a directory\)"):
        check_output(tmp_path / "a-file" / "below" / "s.h5")
    shard = write_store(tmp_path / "shard.h5", ["a"])
    with pytest.raises(InvalidInput, match="is a folder"):
        merge_stores([shard], tmp_path)
    with (
        StoreWriter(tmp_path / "busy.h5", STORE_CONFIG, STORE_WEIGHTS),
        pytest.raises(InUse, match=r"another process \(pid \d+ on host .*\) is writing"),
    ):
        check_output(tmp_path / "busy.h5")
    assert not list(tmp_path.glob(".*probe*"))


def test_a_read_only_output_folder_is_refused(tmp_path):
    if os.geteuid() == 0:  # chmod does not stop root; sysfs refuses even root
        folder = Path("/sys")
        if not folder.is_dir() or _can_create(folder):
            pytest.skip("no folder here refuses root")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
    with pytest.raises(InvalidInput, match="does not accept new files"):
        check_output(folder / "s.h5")
    with pytest.raises(InvalidInput, match="does not accept new files"):
        StoreWriter(folder / "s.h5", STORE_CONFIG, STORE_WEIGHTS)


def _can_create(folder: Path) -> bool:
    try:
        (folder / f".probe.{os.getpid()}").touch()
    except OSError:
        return False
    (folder / f".probe.{os.getpid()}").unlink()
    return True


def test_a_full_disk_while_consolidating_names_the_store_and_keeps_the_parts(tmp_path, monkeypatch):
    """h5py's "file write failed ... errno = 28" while packing the parts was a traceback: now one
    line naming the store and the space it needs; the parts stay and a rerun packs them."""
    path = tmp_path / "s.h5"
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        for key in ("a", "b"):
            writer.write(synthetic_record(key, frames=2))
        parts = sorted(writer.parts_dir.glob("*.h5"))
        needed = size_text(sum(part.stat().st_size for part in parts))

        def full(part, videos):
            raise OSError(
                "Can't synchronously write data (file write failed: time = now, filename = "
                f"'{path}', errno = 28, error message = 'No space left on device')"
            )

        monkeypatch.setattr(writer_module, "copy_part", full)
        with pytest.raises(DiskFull) as caught:
            writer.consolidate()
        assert str(caught.value).startswith(
            f"the disk is full: writing {path} needs about {needed} ("
        )
        assert sorted(writer.parts_dir.glob("*.h5")) == parts and not path.exists()
        assert not list(tmp_path.glob(".s.h5.*.tmp"))
        monkeypatch.undo()
        writer.consolidate()
    with FeatureStore(path) as store:
        assert sorted(store) == ["a", "b"]
