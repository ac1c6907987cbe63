"""The feature store: round trips, validation, crash safety, shards and the official layout."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from masn.errors import InUse, InvalidInput, MissingInput
from masn.extract.store.official import OFFICIAL_FILES, export_official, import_official
from masn.extract.store.store import (
    FIELDS,
    REQUIRED_FIELDS,
    DamagedStore,
    FeatureStore,
    StoreWriter,
    VideoRecord,
    check_output,
    merge_stores,
)
from tests.conftest import REPO

CONFIG = {"fps": 6, "sample_every": 4, "detector": {"boxes": 10}}
WEIGHTS = {"detector": "ab" * 32, "resnet152": "random", "i3d": "cd" * 32}
KEYS = ["a/b/clip 1.mp4", "über/视频.gif", "100%.webm", ".hidden", "x" * 300 + "/long.mp4"]


def synthetic_record(key: str, frames: int | None = None, full: bool = True) -> VideoRecord:
    """A deterministic record for ``key`` with real MASN widths (10 objects, 2048 channels)."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    t = frames or int(rng.integers(1, 5))
    width, height = 320, 240
    corners = np.sort(rng.uniform(0, 1, (t, 10, 2, 2)), axis=2) * [width, height]
    boxes = corners.reshape(t, 10, 4).astype(np.float32)
    record = VideoRecord(
        key=key,
        appearance=rng.normal(size=(t, 2048)).astype(np.float32),
        appearance_objects=rng.normal(size=(t, 10, 2048)).astype(np.float32),
        motion=rng.normal(size=(t, 2048)).astype(np.float32),
        motion_objects=rng.normal(size=(t, 10, 2048)).astype(np.float32),
        box_geometry=VideoRecord.geometry_from_boxes(boxes, width, height),
        path=f"/data/{key}",
        width=width,
        height=height,
        source_fps=25.0,
        duration=t * 4 / 6,
        frames=t * 4,
    )
    if full:
        record.boxes = boxes
        record.frame_times = np.arange(t) * 4 / 6
        record.object_labels = rng.integers(0, 1600, (t, 10))
        record.attribute_labels = rng.integers(0, 400, (t, 10))
        record.object_scores = rng.uniform(size=(t, 10)).astype(np.float32)
        record.attribute_scores = rng.uniform(size=(t, 10)).astype(np.float32)
    return record


def write_store(path: Path, keys: list[str], config: dict = CONFIG, **kwargs) -> Path:
    with StoreWriter(path, config, WEIGHTS, **kwargs) as writer:
        for key in keys:
            writer.write(synthetic_record(key))
        return writer.consolidate()


def assert_same(read: VideoRecord, written: VideoRecord, dtype: str = "float16") -> None:
    for name in FIELDS:
        expected = getattr(written, name)
        if expected is None:
            assert getattr(read, name) is None, name
            continue
        stored = getattr(read, name)
        if name in REQUIRED_FIELDS[:4]:
            assert stored.dtype == np.dtype(dtype), name
            expected = expected.astype(dtype)
        np.testing.assert_array_equal(stored, expected, err_msg=name)


def test_round_trip_float16(tmp_path):
    path = write_store(tmp_path / "store.h5", KEYS)
    assert not (tmp_path / "store.h5.parts").exists()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(KEYS)
        assert len(store) == len(KEYS) and KEYS[1] in store and "nope" not in store
        assert store.provenance.config == CONFIG and store.provenance.weights == WEIGHTS
        assert store.feature_dtype == "float16"
        for key in KEYS:
            written, read = synthetic_record(key), store.read(key)
            assert_same(read, written)
            assert read.key == key and store.num_frames(key) == len(written.appearance)
            assert (read.path, read.width, read.height) == (f"/data/{key}", 320, 240)
            assert (read.source_fps, read.frames) == (25.0, written.frames)
            assert read.object_labels.dtype == np.int16 and read.frame_times.dtype == np.float64
        subset = store.read(KEYS[0], fields=["appearance", "box_geometry"])
        assert subset.motion is None and subset.boxes is None
        np.testing.assert_array_equal(subset.box_geometry, synthetic_record(KEYS[0]).box_geometry)
        with pytest.raises(ValueError, match="unknown field"):
            store.read(KEYS[0], fields=["apperance"])
    with h5py.File(path, "r") as file:
        assert file.attrs["format"] == "masn-features" and file.attrs["version"] == 1
        assert "a%2Fb%2Fclip%201.mp4" in file["videos"]


def test_float32_store_and_optional_fields(tmp_path):
    with StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS, dtype="float32") as writer:
        writer.write(synthetic_record("bare", full=False))
        writer.consolidate()
    with FeatureStore(tmp_path / "s.h5") as store:
        read = store.read("bare")
        assert_same(read, synthetic_record("bare", full=False), dtype="float32")
        assert read.boxes is None and read.object_scores is None and read.frame_times is None


def test_geometry_from_boxes():
    boxes = np.array([[10, 20, 110, 60], [0, 0, 0, 0]], dtype=np.float32)
    geometry = VideoRecord.geometry_from_boxes(boxes, 200, 100)
    expected = [[0.05, 0.2, 0.55, 0.6, 0.5, 0.4], [0, 0, 0, 0, 0, 0]]
    np.testing.assert_allclose(geometry, expected, rtol=1e-6)
    assert geometry.dtype == np.float32


def test_shape_and_value_validation(tmp_path):
    with StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS) as writer:
        record = synthetic_record("v/1", frames=3)
        record.motion = record.motion[:2]
        with pytest.raises(ValueError, match=r"'v/1'.*motion \(2, 2048\).*appearance \(T, A\)"):
            writer.write(record)
        record = synthetic_record("v/2", frames=3)
        record.box_geometry = record.box_geometry[:, :9]
        with pytest.raises(ValueError, match=r"box_geometry \(3, 9, 6\)"):
            writer.write(record)
        record = synthetic_record("v/3")
        record.motion_objects = None
        with pytest.raises(ValueError, match=r"missing required field.*motion_objects"):
            writer.write(record)
        record = synthetic_record("v/4")
        record.appearance = record.appearance * 1e6
        with pytest.raises(ValueError, match="too large for float16"):
            writer.write(record)
        record = synthetic_record("v/5")
        record.object_labels = record.object_labels.astype(np.float32)
        with pytest.raises(ValueError, match="must hold integers"):
            writer.write(record)
        with pytest.raises(ValueError, match="invalid video key"):
            writer.write(synthetic_record(".."))
        assert writer.done_keys() == frozenset()
        writer.write(synthetic_record("ok"))
        with pytest.raises(ValueError, match="already in"):
            writer.write(synthetic_record("ok"))


def test_done_keys_after_partial_runs(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        for key in KEYS[:2]:
            writer.write(synthetic_record(key))
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        assert writer.done_keys() == set(KEYS[:2])
        writer.write(synthetic_record(KEYS[2]))
        writer.consolidate()
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        assert writer.done_keys() == set(KEYS[:3])
        for key in KEYS[3:]:
            writer.write(synthetic_record(key))
        assert writer.done_keys() == set(KEYS)
    assert len(FeatureStore(path)) == 3
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        writer.consolidate()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(KEYS)
        assert_same(store.read(KEYS[4]), synthetic_record(KEYS[4]))


def test_missing_store_points_at_parts(tmp_path):
    with StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record("a"))
    with pytest.raises(FileNotFoundError, match=r"s\.h5\.parts holds unconsolidated videos"):
        FeatureStore(tmp_path / "s.h5")


def test_leftovers_of_a_crash_are_cleaned_and_ignored(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, KEYS[:2])
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record(KEYS[2]))
    parts = tmp_path / "s.h5.parts"
    stale_part = parts / f".{'half%2Fwritten'}.99999999.tmp"
    stale_part.write_bytes(b"\x89HDF\r\n half a video")
    stale_store = tmp_path / ".s.h5.99999999.tmp"  # masn.atomic's name for a killed pid 99999999
    stale_store.write_bytes(b"\x89HDF\r\n half a store")
    stale_staging = parts / ".half%2Fwritten.99999999.appearance.tmp"  # a streamed video's rows
    stale_staging.write_bytes(b"rows")
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        assert not stale_part.exists() and not stale_store.exists()
        assert not stale_staging.exists()
        assert writer.done_keys() == set(KEYS[:3])
        writer.consolidate()
    assert not parts.exists()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(KEYS[:3])


def test_consolidation_killed_after_the_rename_is_redone(tmp_path):
    path = tmp_path / "s.h5"
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record(KEYS[0]))
        writer.write(synthetic_record(KEYS[1]))
        parts = {p.name: p.read_bytes() for p in writer.parts_dir.iterdir() if p.suffix == ".h5"}
        writer.consolidate()
        for name, data in parts.items():  # as if killed before the parts were deleted
            (writer.parts_dir / name).write_bytes(data)
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        assert writer.done_keys() == set(KEYS[:2])
        writer.consolidate()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(KEYS[:2])
        assert_same(store.read(KEYS[1]), synthetic_record(KEYS[1]))


def test_provenance_mismatch_is_refused(tmp_path):
    path = write_store(tmp_path / "s.h5", ["a"])
    with pytest.raises(ValueError, match=r"config \(fps\).*another output path"):
        StoreWriter(path, {**CONFIG, "fps": 5}, WEIGHTS)
    with pytest.raises(ValueError, match=r"weights \(i3d\)"):
        StoreWriter(path, CONFIG, {**WEIGHTS, "i3d": "random"})
    with pytest.raises(ValueError, match="feature dtype"):
        StoreWriter(path, CONFIG, WEIGHTS, dtype="float32")
    with StoreWriter(tmp_path / "parts_only.h5", CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record("a"))
    with pytest.raises(ValueError, match=r"provenance\.json.*config \(sample_every\)"):
        StoreWriter(tmp_path / "parts_only.h5", {**CONFIG, "sample_every": 2}, WEIGHTS)


def test_one_writer_at_a_time(tmp_path):
    with (
        StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS),
        pytest.raises(RuntimeError, match="another process is writing"),
    ):
        StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS)


def test_unknown_key_lists_close_keys(tmp_path):
    path = write_store(tmp_path / "s.h5", ["video12", "video13", "other"])
    with FeatureStore(path) as store, pytest.raises(KeyError, match=r"close keys: 'video1[23]'"):
        store.read("video1")


def test_merge_shards(tmp_path):
    first = write_store(tmp_path / "rank0.h5", KEYS[:3])
    second = write_store(tmp_path / "rank1.h5", KEYS[2:])
    merged = merge_stores([first, second], tmp_path / "all.h5")
    with FeatureStore(merged) as store:
        assert sorted(store.keys()) == sorted(KEYS)
        assert store.provenance.config == CONFIG
        for key in KEYS:
            assert_same(store.read(key), synthetic_record(key))


def test_merge_refuses_conflicts_and_foreign_shards(tmp_path):
    first = write_store(tmp_path / "rank0.h5", ["a", "b"])
    with StoreWriter(tmp_path / "rank1.h5", CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record("b", frames=7))
        writer.consolidate()
    with pytest.raises(ValueError, match="video 'b' differs between"):
        merge_stores([first, tmp_path / "rank1.h5"], tmp_path / "all.h5")
    assert not (tmp_path / "all.h5").exists()
    assert not list(tmp_path.glob("all.h5.tmp.*"))
    other = write_store(tmp_path / "other.h5", ["c"], config={**CONFIG, "fps": 5})
    with pytest.raises(ValueError, match="one extraction configuration"):
        merge_stores([first, other], tmp_path / "all.h5")


@pytest.mark.parametrize("dataset", ["tgif", "msvd", "msrvtt"])
def test_official_layout_round_trip(tmp_path, dataset):
    prefix = {"tgif": "tumblr_", "msvd": "vid", "msrvtt": "video"}[dataset]
    keys = [f"{prefix}{number}" for number in (3, 17, 240)]
    key_map = {key: str(1000 + i) for i, key in enumerate(keys)} if dataset == "tgif" else None
    store = write_store(tmp_path / "ours.h5", keys)
    paths = export_official(store, tmp_path / "official", dataset, key_map)
    files = OFFICIAL_FILES[dataset]
    assert [p.name for p in paths] == list(files.names())
    official = {key: key_map[key] if key_map else key for key in keys}
    with h5py.File(tmp_path / "official" / files.objects, "r") as objects:
        assert set(objects) == {"image_features", "spatial_features"}
        assert set(objects["spatial_features"]) == set(official.values())
        geometry = objects["spatial_features"][official[keys[0]]]
        assert geometry.dtype == np.float32 and geometry.shape[1:] == (10, 6)
    with h5py.File(tmp_path / "official" / files.motion_objects, "r") as motion_objects:
        assert motion_objects[official[keys[1]]].dtype == np.float32

    back = import_official(tmp_path / "official", dataset, tmp_path / "back.h5", key_map)
    with FeatureStore(back) as store:
        assert sorted(store.keys()) == sorted(keys)
        assert store.provenance.config == {"source": "official MASN features", "dataset": dataset}
        for key in keys:
            read = store.read(key)
            assert_same(read, synthetic_record(key, full=False))
            assert read.boxes is None and read.object_labels is None


def test_export_needs_official_keys(tmp_path, caplog):
    store = write_store(tmp_path / "ours.h5", ["tumblr_abc", "tumblr_def"])
    with pytest.raises(ValueError, match=r"integer `key` column.*key_map"):
        export_official(store, tmp_path / "official", "tgif")
    export_official(store, tmp_path / "official", "tgif", {"tumblr_abc": "7"})
    assert "leaving out 1 videos" in caplog.text and "'tumblr_def'" in caplog.text
    appearance = tmp_path / "official" / OFFICIAL_FILES["tgif"].appearance
    with h5py.File(appearance, "r") as file:
        assert list(file) == ["7"]
    with pytest.raises(ValueError, match=r"not a MASN feature store.*import_official"):
        FeatureStore(appearance)


def test_import_reports_incomplete_videos(tmp_path):
    store = write_store(tmp_path / "ours.h5", ["vid1", "vid2", "vid3"])
    export_official(store, tmp_path / "official", "msvd")
    files = OFFICIAL_FILES["msvd"]
    with h5py.File(tmp_path / "official" / files.motion, "a") as motion:
        del motion["vid2"]
    with h5py.File(tmp_path / "official" / files.objects, "a") as objects:
        data = objects["spatial_features"]["vid3"][()]
        del objects["spatial_features"]["vid3"]
        objects["spatial_features"]["vid3"] = np.concatenate([data, data])
    with pytest.raises(ValueError, match=r"1 missing from msvd_i3d_avgpool_perclip.*vid2.*1 with"):
        import_official(tmp_path / "official", "msvd", tmp_path / "back.h5")
    back = tmp_path / "back.h5"
    import_official(tmp_path / "official", "msvd", back, skip_incomplete=True)
    assert FeatureStore(back).keys() == ["vid1"]
    (tmp_path / "official" / files.motion_objects).unlink()
    with pytest.raises(FileNotFoundError, match="msvd_i3d_roialign_perclip_obj10"):
        import_official(tmp_path / "official", "msvd", tmp_path / "back.h5")


def _read_in_child(store: FeatureStore, keys: list[str], queue) -> None:
    queue.put([float(store.read(key).appearance_objects.astype(np.float64).sum()) for key in keys])


def test_forked_processes_read_the_store(tmp_path):
    path = write_store(tmp_path / "s.h5", KEYS)
    expected = [
        float(synthetic_record(key).appearance_objects.astype(np.float16).astype(np.float64).sum())
        for key in KEYS
    ]
    context = multiprocessing.get_context("fork")
    with FeatureStore(path) as store:
        store.read(KEYS[0])  # the parent's handle is open when the workers fork
        queue = context.Queue()
        workers = [context.Process(target=_read_in_child, args=(store, KEYS, queue)) for _ in "ab"]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        assert results == [expected, expected]
        assert store.read(KEYS[1]).key == KEYS[1]  # the parent's handle still works
        copy = pickle.loads(pickle.dumps(store))
        assert copy.keys() == store.keys()
        assert_same(copy.read(KEYS[2]), synthetic_record(KEYS[2]))


def test_replaced_store_is_refused(tmp_path):
    path = write_store(tmp_path / "s.h5", ["a"])
    store = FeatureStore(path)
    store.read("a")
    copy = pickle.dumps(store)
    store.close()
    write_store(tmp_path / "s2.h5", ["a"])
    os.replace(tmp_path / "s2.h5", path)
    with pytest.raises(RuntimeError, match="was replaced"):
        pickle.loads(copy).read("a")


CHILD = """
import sys
from masn.extract.store.store import StoreWriter
from tests.extract.store.test_store import CONFIG, WEIGHTS, synthetic_record

path, count = sys.argv[1], int(sys.argv[2])
with StoreWriter(path, CONFIG, WEIGHTS) as writer:
    done = writer.done_keys()
    for i in range(count):
        key = f"clip/{i:04d}"
        if key not in done:
            writer.write(synthetic_record(key, frames=3))
            print(key, flush=True)
    writer.consolidate()
"""


def _run_child(path: Path, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(count)],
        cwd=REPO,
        env=env,
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

    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        done = writer.done_keys()
        # Everything reported is committed; at most the one being reported when killed is extra.
        assert set(printed) <= done and len(done - set(printed)) <= 1
        assert len(done) < count and not list(parts.glob(".*.tmp"))
        writer.consolidate()
    with FeatureStore(path) as store:
        assert set(store.keys()) == done
        for key in done:
            assert_same(store.read(key), synthetic_record(key, frames=3))

    rerun = _run_child(path, count)
    written = rerun.communicate(timeout=60)[0].split()
    assert rerun.returncode == 0
    expected = {f"clip/{i:04d}" for i in range(count)}
    assert set(written) == expected - done and len(written) == len(set(written))
    with FeatureStore(path) as store:
        assert set(store.keys()) == expected


def _arrays(record: VideoRecord) -> dict[str, np.ndarray]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name) is not None}


def _metadata(record: VideoRecord) -> dict:
    names = ("path", "width", "height", "source_fps", "duration", "frames")
    return {name: getattr(record, name) for name in names}


def test_a_part_written_block_by_block_equals_a_whole_record(tmp_path):
    record = synthetic_record("streamed.mp4", frames=7)
    rows = _arrays(record)
    with StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS) as writer:
        part = writer.begin(record.key)
        for start, stop in ((0, 3), (3, 4), (4, 7)):
            part.append({name: array[start:stop] for name, array in rows.items()})
        assert writer.done_keys() == set()  # not a committed video yet
        part.commit(**_metadata(record))
        assert writer.done_keys() == {record.key}
        assert sorted(p.name for p in writer.parts_dir.iterdir()) == [
            ".lock",
            "provenance.json",
            "streamed.mp4.h5",
        ]
        writer.consolidate()
    with FeatureStore(tmp_path / "s.h5") as store:
        assert_same(store.read(record.key), record)
    with h5py.File(tmp_path / "s.h5", "r") as file:
        group = file["videos/streamed.mp4"]
        assert all(group[name].chunks is None for name in group)  # contiguous, as before


def test_an_aborted_or_inconsistent_part_leaves_nothing(tmp_path):
    record = synthetic_record("a", frames=4)
    rows = _arrays(record)
    with StoreWriter(tmp_path / "s.h5", CONFIG, WEIGHTS) as writer:
        with writer.begin("a") as part:
            part.append({name: array[:2] for name, array in rows.items()})
            assert any(p.suffix == ".tmp" for p in writer.parts_dir.iterdir())
        with pytest.raises(ValueError, match="inconsistent shapes"), writer.begin("a") as part:
            part.append({name: array[:2] for name, array in rows.items()})
            part.append({**rows, "appearance": rows["appearance"][:, :16]})
        with pytest.raises(ValueError, match="no sampled frames"), writer.begin("a") as part:
            part.commit(**_metadata(record))
        assert not any(p.suffix == ".tmp" for p in writer.parts_dir.iterdir())
        assert writer.done_keys() == set()


def test_a_path_that_is_not_utf8_survives_the_store(tmp_path):
    record = synthetic_record("caf%E9.mp4")
    record.path = os.fsdecode(b"/videos/caf\xe9.mp4")
    path = tmp_path / "s.h5"
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        writer.write(record)
        writer.consolidate()
    with FeatureStore(path) as store:
        assert os.fsencode(store.read("caf%E9.mp4").path) == b"/videos/caf\xe9.mp4"


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:
        path.write_text("notes about the features\n")


@pytest.mark.parametrize("how", ["truncated", "emptied", "text"])
def test_a_damaged_store_is_one_line_for_readers(tmp_path, how):
    path = write_store(tmp_path / "s.h5", KEYS[:2])
    _damage(path, how)
    with pytest.raises(DamagedStore, match=r"s\.h5 is damaged or not an HDF5 file") as caught:
        FeatureStore(path)
    assert "\n" not in str(caught.value) and "masn extract" in str(caught.value)
    with pytest.raises(InvalidInput, match="is damaged"):
        merge_stores([path], tmp_path / "merged.h5")


@pytest.mark.parametrize("how", ["truncated", "text"])
def test_a_writer_moves_a_damaged_store_aside_and_keeps_the_parts(tmp_path, how, caplog):
    path = write_store(tmp_path / "s.h5", KEYS[:2])
    with StoreWriter(path, CONFIG, WEIGHTS) as writer:
        writer.write(synthetic_record(KEYS[2]))  # committed, not consolidated
    _damage(path, how)
    damaged = path.read_bytes()
    with caplog.at_level("WARNING"), StoreWriter(path, CONFIG, WEIGHTS) as writer:
        assert writer.done_keys() == {KEYS[2]}  # the videos only in the damaged file are redone
        writer.write(synthetic_record(KEYS[0]))
        writer.consolidate()
    (aside,) = tmp_path.glob("s.h5.corrupt-*")
    assert aside.read_bytes() == damaged
    assert "is damaged" in caplog.text and str(aside) in caplog.text
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted([KEYS[0], KEYS[2]])
        assert_same(store.read(KEYS[2]), synthetic_record(KEYS[2]))


def test_a_foreign_hdf5_file_is_refused_not_moved(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as file:
        file["x"] = [1, 2, 3]
    with pytest.raises(InvalidInput, match="not a MASN feature store"):
        StoreWriter(path, CONFIG, WEIGHTS)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_output_paths_are_checked_before_any_work(tmp_path):
    check_output(tmp_path / "fine.h5")
    with pytest.raises(InvalidInput, match="is a folder; give a file path such as"):
        check_output(tmp_path)
    with pytest.raises(InvalidInput, match="not a regular file"):
        check_output(Path("/dev/null"))
    with pytest.raises(MissingInput, match="does not exist; create it first"):
        check_output(tmp_path / "nowhere" / "s.h5")
    shard = write_store(tmp_path / "shard.h5", ["a"])
    with pytest.raises(InvalidInput, match="is a folder"):
        merge_stores([shard], tmp_path)
    with (
        StoreWriter(tmp_path / "busy.h5", CONFIG, WEIGHTS),
        pytest.raises(InUse, match="another process is writing"),
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
        StoreWriter(folder / "s.h5", CONFIG, WEIGHTS)


def _can_create(folder: Path) -> bool:
    try:
        (folder / f".probe.{os.getpid()}").touch()
    except OSError:
        return False
    (folder / f".probe.{os.getpid()}").unlink()
    return True
