"""Reading a store: round trips, subsets of fields, unknown keys, worker processes, a store
replaced on disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle

import h5py
import numpy as np
import pytest

from masn.extract.store.reader import FeatureStore
from masn.extract.store.writer import StoreWriter
from masn.pipeline.cli import main
from tests.builders import (
    ODD_KEYS,
    STORE_CONFIG,
    STORE_WEIGHTS,
    assert_stored,
    synthetic_record,
    write_store,
)


def test_round_trip_float16(tmp_path):
    path = write_store(tmp_path / "store.h5", ODD_KEYS)
    assert not (tmp_path / "store.h5.parts").exists()
    with FeatureStore(path) as store:
        assert sorted(store.keys()) == sorted(ODD_KEYS)
        assert len(store) == len(ODD_KEYS) and ODD_KEYS[1] in store and "nope" not in store
        assert store.provenance.config == STORE_CONFIG
        assert store.provenance.weights == STORE_WEIGHTS
        assert store.feature_dtype == "float16"
        for key in ODD_KEYS:
            written, read = synthetic_record(key), store.read(key)
            assert_stored(read, written)
            assert read.key == key and store.num_frames(key) == len(written.appearance)
            assert (read.path, read.width, read.height) == (f"/data/{key}", 320, 240)
            assert (read.source_fps, read.frames) == (25.0, written.frames)
            assert read.object_labels.dtype == np.int16 and read.frame_times.dtype == np.float64
        subset = store.read(ODD_KEYS[0], fields=["appearance", "box_geometry"])
        assert subset.motion is None and subset.boxes is None
        expected = synthetic_record(ODD_KEYS[0]).box_geometry
        np.testing.assert_array_equal(subset.box_geometry, expected)
        with pytest.raises(ValueError, match="unknown field"):
            store.read(ODD_KEYS[0], fields=["apperance"])
    with h5py.File(path, "r") as file:
        assert file.attrs["format"] == "masn-features" and file.attrs["version"] == 1
        assert "a%2Fb%2Fclip%201.mp4" in file["videos"]


def test_float32_store_and_optional_fields(tmp_path):
    with StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS, dtype="float32") as writer:
        writer.write(synthetic_record("bare", full=False))
        writer.consolidate()
    with FeatureStore(tmp_path / "s.h5") as store:
        read = store.read("bare")
        assert_stored(read, synthetic_record("bare", full=False), dtype="float32")
        assert read.boxes is None and read.object_scores is None and read.frame_times is None


def test_missing_store_points_at_parts(tmp_path):
    with StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record("a"))
    with pytest.raises(FileNotFoundError, match=r"s\.h5\.parts holds unconsolidated videos"):
        FeatureStore(tmp_path / "s.h5")


def test_unknown_key_lists_close_keys(tmp_path):
    path = write_store(tmp_path / "s.h5", ["video12", "video13", "other"])
    with FeatureStore(path) as store, pytest.raises(KeyError, match=r"close keys: 'video1[23]'"):
        store.read("video1")


def _read_in_child(store: FeatureStore, keys: list[str], queue) -> None:
    queue.put([float(store.read(key).appearance_objects.astype(np.float64).sum()) for key in keys])


def test_forked_processes_read_the_store(tmp_path):
    path = write_store(tmp_path / "s.h5", ODD_KEYS)
    expected = [
        float(synthetic_record(key).appearance_objects.astype(np.float16).astype(np.float64).sum())
        for key in ODD_KEYS
    ]
    context = multiprocessing.get_context("fork")
    with FeatureStore(path) as store:
        store.read(ODD_KEYS[0])  # the parent's handle is open when the workers fork
        queue = context.Queue()
        workers = [
            context.Process(target=_read_in_child, args=(store, ODD_KEYS, queue)) for _ in "ab"
        ]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
            assert worker.exitcode == 0
        assert results == [expected, expected]
        assert store.read(ODD_KEYS[1]).key == ODD_KEYS[1]  # the parent's handle still works
        copy = pickle.loads(pickle.dumps(store))
        assert copy.keys() == store.keys()
        assert_stored(copy.read(ODD_KEYS[2]), synthetic_record(ODD_KEYS[2]))


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


def test_frame_counts_come_from_the_index_or_video_by_video(tmp_path, capsys):
    """`masn features list`: every key with its sampled frames, from the store's index, or
    from each video's headers in a store written before it had one."""
    keys = [*ODD_KEYS, "tab\tkey.mp4"]
    records = [synthetic_record(key, frames=1 + i) for i, key in enumerate(keys)]
    store = write_store(tmp_path / "s.h5", records)
    with FeatureStore(store) as features:
        listed = list(features.frame_counts())
        assert listed == [(key, features.num_frames(key)) for key in features]
    assert sorted(listed) == sorted((key, 1 + i) for i, key in enumerate(keys))
    with h5py.File(store, "r+") as file:
        del file["index"]
    with FeatureStore(store) as features:
        assert list(features.frame_counts()) == listed
    assert main(["features", "list", str(store)]) == 0
    shown = {key: json.dumps(key) if "\t" in key else key for key in keys}
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{shown[key]}\t{frames}" for key, frames in listed]
