"""`masn features`: our store <-> the official MASN four-file layout, with key maps."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from masn.errors import InvalidInput
from masn.extract.store.official_layout import official_files
from masn.extract.store.official_reader import OfficialFeatures
from masn.extract.store.official_transfer import read_key_map
from masn.extract.store.reader import FeatureStore
from masn.pipeline.cli import main
from tests.builders import random_record, write_store


def _store(path, keys):
    rng = np.random.default_rng(0)
    records = [random_record(key, 3, rng) for key in keys]
    write_store(path, records, {"test": True}, {"detector": "random"})


def test_export_then_import_round_trip_through_the_cli(tmp_path):
    store, folder, back = tmp_path / "ours.h5", tmp_path / "official", tmp_path / "back.h5"
    _store(store, ["vid1", "vid7"])
    assert main(["features", "export-official", str(store), str(folder), "--dataset", "msvd"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(official_files("msvd").names())
    assert main(["features", "import-official", str(folder), str(back), "--dataset", "msvd"]) == 0
    with FeatureStore(store) as ours, FeatureStore(back) as imported:
        assert sorted(imported.keys()) == ["vid1", "vid7"]
        for key in ours:
            np.testing.assert_array_equal(ours.read(key).motion, imported.read(key).motion)


def test_tgif_keys_come_from_a_key_map(tmp_path):
    store, folder = tmp_path / "ours.h5", tmp_path / "official"
    _store(store, ["tumblr_a", "tumblr_b"])
    key_map = tmp_path / "keys.tsv"
    key_map.write_text("tumblr_a\t17\ntumblr_b\t42\n")
    command = ["features", "export-official", str(store), str(folder), "--dataset", "tgif"]
    assert main([*command, "--key-map", str(key_map)]) == 0
    with h5py.File(folder / "res152_avgpool.hdf5", "r") as file:
        assert sorted(file) == ["17", "42"]


def test_key_map_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "keys.tsv"
    bad.write_text("a\t1\nb 2\n")
    with pytest.raises(ValueError, match=r"keys\.tsv:2"):
        read_key_map(bad)


def test_key_map_from_a_real_tgif_question_file(shared_dir):
    mapping = read_key_map(shared_dir / "data" / "tgif-qa" / "Test_count_question.csv")
    assert mapping["tumblr_nezfs4uELd1u1a7cmo1_250"] == "52"  # the file's first row
    assert len(mapping) == len(set(mapping.values())) > 1000


# --- damaged inputs: one line naming the file (and dataset), exit 2 ---------------------------

FILES = official_files("msvd")


def _official(tmp_path):
    """The official msvd files of two videos, exported by the CLI."""
    store, folder = tmp_path / "ours.h5", tmp_path / "official"
    _store(store, ["vid1", "vid7"])
    assert main(["features", "export-official", str(store), str(folder), "--dataset", "msvd"]) == 0
    return folder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit(path, change):
    with h5py.File(path, "r+") as file:
        change(file)


def _group_for_dataset(file):
    del file["vid7"]
    file.create_group("vid7")


def _objects_as_dataset(file):
    del file["image_features"]
    file.create_dataset("image_features", data=np.zeros(3))


def _rank(file):
    del file["vid7"]
    file.create_dataset("vid7", data=np.zeros((3, 1, 2048)))


def _box_width(file):
    del file["spatial_features/vid7"]
    file.create_dataset("spatial_features/vid7", data=np.zeros((3, 10, 4)))


def _objects(file):
    del file["vid7"]
    file.create_dataset("vid7", data=np.zeros((3, 9, 2048)))


def _text(file):
    del file["vid7"]
    file.create_dataset("vid7", data=np.array([b"a", b"b", b"c"]))


def _not_finite(file):
    values = file["image_features/vid7"][()]
    values[1, 2, 3] = np.inf
    file["image_features/vid7"][...] = values


DAMAGE = {
    "empty": (FILES.appearance, lambda path: path.write_bytes(b""), "file signature not found"),
    "text": (FILES.motion, lambda path: path.write_text("hello\n"), "not a readable HDF5 file"),
    "truncated": (FILES.objects, _truncate, "truncated file"),
    "group": (
        FILES.appearance,
        lambda path: _edit(path, _group_for_dataset),
        "dataset /vid7 is a group, not a dataset",
    ),
    "no_objects": (
        FILES.objects,
        lambda path: _edit(path, lambda file: file.__delitem__("image_features")),
        "has no 'image_features'",
    ),
    "objects_dataset": (
        FILES.objects,
        lambda path: _edit(path, _objects_as_dataset),
        "has a dataset, not a group, 'image_features'",
    ),
    "rank": (
        FILES.motion,
        lambda path: _edit(path, _rank),
        "dataset /vid7 holds float64 (3, 1, 2048)",
    ),
    "boxes": (
        FILES.objects,
        lambda path: _edit(path, _box_width),
        "dataset /spatial_features/vid7 holds float64 (3, 10, 4)",
    ),
    "objects": (
        FILES.motion_objects,
        lambda path: _edit(path, _objects),
        "disagree on the number of objects",
    ),
    "strings": (FILES.appearance, lambda path: _edit(path, _text), "expected numbers shaped"),
    "not_finite": (
        FILES.objects,
        lambda path: _edit(path, _not_finite),
        "dataset /image_features/vid7 (video 'vid7') holds NaN or infinite values",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_official_files_are_one_line_errors(tmp_path, caplog, damage):
    folder = _official(tmp_path)
    name, spoil, words = DAMAGE[damage]
    spoil(folder / name)
    back = tmp_path / "back.h5"
    caplog.clear()
    assert main(["features", "import-official", str(folder), str(back), "--dataset", "msvd"]) == 2
    message = caplog.records[-1].getMessage()
    assert str(folder / name) in message and words in message, message
    assert "\n" not in message and "download it again" in message
    assert not back.exists()


@pytest.mark.parametrize("damage", ["empty", "group", "no_objects", "boxes", "not_finite"])
def test_reading_damaged_official_files_in_place_names_them(tmp_path, damage):
    folder = _official(tmp_path)
    name, spoil, words = DAMAGE[damage]
    spoil(folder / name)
    with (
        pytest.raises(InvalidInput, match=re.escape(words)) as caught,
        OfficialFeatures(folder, "msvd") as f,
    ):
        f.read("vid7")
    assert str(folder / name) in str(caught.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"a\t1\nb\t2\n\x89HDF\r\n\x1a\n", ":3: byte 0x89 is not UTF-8"),
        (b"a\t1\nb\x00\t2\n", ":2: a NUL byte: this is a binary file"),
    ],
)
def test_a_binary_key_map_is_a_one_line_error_with_its_line(tmp_path, caplog, data, words):
    folder = _official(tmp_path)
    key_map = tmp_path / "keys.tsv"
    key_map.write_bytes(data)
    command = ["features", "import-official", str(folder), str(tmp_path / "back.h5")]
    assert main([*command, "--dataset", "msvd", "--key-map", str(key_map)]) == 2
    message = caplog.records[-1].getMessage()
    assert f"{key_map}{words}" in message and "\n" not in message, message
    missing = tmp_path / "missing.tsv"
    assert main([*command, "--dataset", "msvd", "--key-map", str(missing)]) == 2
    assert f"no key-map file {missing}" in caplog.records[-1].getMessage()


def test_importing_files_without_videos_is_refused_and_writes_nothing(tmp_path, caplog):
    """Empty official files were imported as an empty store, exit 0."""
    folder, back = tmp_path / "official", tmp_path / "back.h5"
    folder.mkdir()
    for name in official_files("msvd").names():
        with h5py.File(folder / name, "w") as file:
            if name == official_files("msvd").objects:
                file.create_group("image_features")
                file.create_group("spatial_features")
    assert main(["features", "import-official", str(folder), str(back), "--dataset", "msvd"]) == 2
    assert caplog.records[-1].getMessage() == (
        f"nothing to import: the official msvd files in {folder} hold no complete video; check "
        "the folder (or the key map) and the --dataset"
    )
    assert not back.exists()
    full = _official(tmp_path / "full")
    key_map = tmp_path / "keys.tsv"
    key_map.write_text("ours\tvid999\n")
    arguments = ["features", "import-official", str(full), str(back), "--dataset", "msvd"]
    assert main([*arguments, "--key-map", str(key_map)]) == 2
    assert "hold no complete video that the key map names" in caplog.records[-1].getMessage()
    assert not back.exists()
