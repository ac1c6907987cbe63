"""`OfficialFeatures` and `open_features`: reading the official four-file layout in place."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from masn.extract.store.official_layout import OFFICIAL_FILES
from masn.extract.store.official_reader import OfficialFeatures, open_features
from masn.extract.store.official_transfer import export_official
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS, REQUIRED_FIELDS, VideoRecord
from tests.builders import random_record, write_store

PREFIX = {"tgif": "tumblr_", "msvd": "vid", "msrvtt": "video"}


def _export(tmp_path: Path, dataset: str, count: int = 4) -> tuple[Path, Path, dict[str, str]]:
    """A float16 store of ``count`` videos (T 1..4) and its official export; our -> official."""
    keys = [f"{PREFIX[dataset]}{number}" for number in range(3, 3 + 7 * count, 7)]
    official = {key: str(100 + i) if dataset == "tgif" else key for i, key in enumerate(keys)}
    store, folder = tmp_path / "ours.h5", tmp_path / "official"
    rng = np.random.default_rng(0)
    records = [random_record(key, 1 + i % 4, rng) for i, key in enumerate(keys)]
    write_store(store, records, {"test": True}, {"detector": "random"})
    export_official(store, folder, dataset, official if dataset == "tgif" else None)
    return store, folder, official


def _expected(store: Path, official: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """Official key -> field -> the store's array as float32."""
    with FeatureStore(store) as reader:
        return {
            official[key]: {
                field: getattr(reader.read(key), field).astype(np.float32)
                for field in REQUIRED_FIELDS
            }
            for key in reader
        }


def _assert_record(record: VideoRecord, arrays: dict[str, np.ndarray], fields=FIELDS) -> None:
    for field in FIELDS:
        value = getattr(record, field)
        if field in arrays and field in fields:
            assert value.dtype == np.float32, field
            np.testing.assert_array_equal(value, arrays[field], err_msg=field)
        else:
            assert value is None, field


@pytest.mark.parametrize("dataset", ["tgif", "msvd", "msrvtt"])
def test_reads_what_the_store_holds(tmp_path, dataset):
    store, folder, official = _export(tmp_path, dataset)
    expected = _expected(store, official)
    with OfficialFeatures(folder, dataset) as features:
        assert features.path == folder and features.feature_dtype == "float32"
        with h5py.File(
            folder / OFFICIAL_FILES[dataset].appearance, "r", locking=False
        ) as appearance:
            assert features.keys() == list(appearance)  # the appearance file's order
        assert sorted(features.keys()) == sorted(expected) and len(features) == len(expected)
        assert list(features) == features.keys()
        for key, arrays in expected.items():
            assert key in features
            assert features.num_frames(key) == len(arrays["appearance"])
            record = features.read(key)
            assert record.key == key and record.width == 0 and record.frames == 0
            _assert_record(record, arrays)
        assert "nope" not in features and 3 not in features


def test_reads_only_the_asked_fields(tmp_path):
    store, folder, official = _export(tmp_path, "msvd")
    expected = _expected(store, official)
    features = OfficialFeatures(folder, "msvd")
    for fields in (["motion"], ["appearance_objects", "box_geometry"], ["boxes"], []):
        record = features.read("vid10", fields=fields)
        _assert_record(record, expected["vid10"], fields)
    with pytest.raises(ValueError, match="unknown field"):
        features.read("vid10", fields=["apperance"])
    with pytest.raises(KeyError, match="close keys: 'vid10'"):
        features.read("vid100")
    with pytest.raises(KeyError, match="no video"):
        features.num_frames("vid100")
    features.close()
    features.close()
    _assert_record(features.read("vid3"), expected["vid3"])  # reopens after close


def test_videos_missing_from_some_files_are_left_out(tmp_path, caplog):
    _, folder, _ = _export(tmp_path, "msvd")
    files = OFFICIAL_FILES["msvd"]
    with h5py.File(folder / files.motion, "a") as motion:
        del motion["vid10"]
    with h5py.File(folder / files.objects, "a") as objects:
        del objects["spatial_features"]["vid17"]
    caplog.set_level(logging.WARNING)
    features = OfficialFeatures(folder, "msvd")
    assert features.keys() == ["vid24", "vid3"]
    assert features.keys() == ["vid24", "vid3"] and len(features) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "leaving out 2 of 4" in message
    assert "msvd_i3d_avgpool_perclip.hdf5 (e.g. vid10)" in message
    assert "msvd_btup_f_obj10.hdf5/spatial_features (e.g. vid17)" in message
    for key in ("vid10", "vid17"):
        assert key not in features
        with pytest.raises(KeyError, match=f"no video '{key}'"):
            features.read(key, fields=["appearance"])


def test_uneven_lengths_across_files_are_an_error(tmp_path):
    _, folder, _ = _export(tmp_path, "msrvtt")
    files = OFFICIAL_FILES["msrvtt"]
    with h5py.File(folder / files.motion_objects, "a") as motion_objects:
        data = motion_objects["video10"][()]
        del motion_objects["video10"]
        motion_objects["video10"] = np.concatenate([data, data])
    features = OfficialFeatures(folder, "msrvtt")
    assert "video10" in features  # listed; the mismatch shows when it is read
    with pytest.raises(ValueError, match=r"'video10'.*res152_avgpool.hdf5: 2.*obj10.hdf5: 4"):
        features.read("video10", fields=["appearance"])
    features.read("video3")


def test_missing_files_are_named(tmp_path):
    _, folder, _ = _export(tmp_path, "tgif")
    (folder / OFFICIAL_FILES["tgif"].motion_objects).unlink()
    with pytest.raises(FileNotFoundError, match=r"tgif_i3d_roialign.*_obj10.hdf5.*rename"):
        OfficialFeatures(folder, "tgif")
    with pytest.raises(FileNotFoundError, match="no folder"):
        OfficialFeatures(tmp_path / "absent", "tgif")
    with pytest.raises(ValueError, match="unknown dataset"):
        OfficialFeatures(folder, "tgifqa")


def _read_in_child(features: OfficialFeatures, keys: list[str], queue) -> None:
    queue.put((os.getpid(), {key: features.read(key) for key in keys}))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_child_processes_read_a_pickled_reader(tmp_path, method):
    store, folder, official = _export(tmp_path, "msvd")
    expected = _expected(store, official)
    context = multiprocessing.get_context(method)
    with OfficialFeatures(folder, "msvd") as features:
        features.read("vid3")  # the parent's handles are open when the children start
        queue = context.Queue()
        children = [
            context.Process(target=_read_in_child, args=(features, list(expected), queue))
            for _ in "ab"
        ]
        for child in children:
            child.start()
        results = [queue.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=60)
            assert child.exitcode == 0
        for pid, records in results:
            assert pid != os.getpid()
            for key, arrays in expected.items():
                _assert_record(records[key], arrays)
        _assert_record(features.read("vid10"), expected["vid10"])  # the parent's still work
        copy = pickle.loads(pickle.dumps(features))
        assert not copy._hdf5.is_open and copy.keys() == features.keys()
        _assert_record(copy.read("vid17"), expected["vid17"])
        copy.close()


def test_replaced_files_are_refused(tmp_path):
    _, folder, _ = _export(tmp_path, "msvd")
    features = OfficialFeatures(folder, "msvd")
    features.read("vid3")
    copy = pickle.dumps(features)
    features.close()
    motion = folder / OFFICIAL_FILES["msvd"].motion
    replacement = motion.with_suffix(".new")
    replacement.write_bytes(motion.read_bytes())
    os.replace(replacement, motion)
    with pytest.raises(RuntimeError, match=r"msvd_i3d_avgpool_perclip\.hdf5 .* was replaced"):
        pickle.loads(copy).read("vid3")


def test_open_features(tmp_path):
    store, folder, _ = _export(tmp_path, "msrvtt")
    with open_features(store) as reader:
        assert isinstance(reader, FeatureStore) and reader.keys()
    with open_features(str(folder), "msrvtt") as reader:
        assert isinstance(reader, OfficialFeatures) and reader.dataset == "msrvtt"
    with open_features(folder) as reader:
        assert isinstance(reader, OfficialFeatures) and reader.dataset == "msrvtt"
        assert reader.keys() == ["video10", "video17", "video24", "video3"]
    with pytest.raises(FileNotFoundError, match=r"feature store \(\.h5\).*masn extract.*tgif"):
        open_features(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no official MASN.*msvd: msvd_res152"):
        open_features(empty)


def test_open_features_detects_partial_and_ambiguous_folders(tmp_path):
    _, folder, _ = _export(tmp_path, "tgif")
    # Only three tgif files: detected as tgif, then the missing one is named.
    (folder / OFFICIAL_FILES["tgif"].motion_objects).unlink()
    with pytest.raises(FileNotFoundError, match="tgif_i3d_roialign_hw7_perclip_avgpool_obj10"):
        open_features(folder)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for dataset in ("msvd", "msrvtt"):
        for name in OFFICIAL_FILES[dataset].names():
            (mixed / name).touch()
    with pytest.raises(ValueError, match=r"several datasets \(msrvtt, msvd\).*pass the dataset"):
        open_features(mixed)
    # One complete set beside a stray file of another dataset is not ambiguous.
    _, msvd, _ = _export(tmp_path / "msvd", "msvd")
    (msvd / OFFICIAL_FILES["msrvtt"].motion).touch()
    with open_features(msvd) as reader:
        assert reader.dataset == "msvd" and len(reader) == 4
