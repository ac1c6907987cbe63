"""`masn features`: our store <-> the official MASN four-file layout, with key maps."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from masn.extract.official_layout import official_files, read_key_map
from masn.extract.store import FeatureStore, StoreWriter, VideoRecord
from masn.pipeline.cli import main


def _store(path, keys):
    rng = np.random.default_rng(0)
    with StoreWriter(path, {"test": True}, {"detector": "random"}) as writer:
        for key in keys:
            t = 3
            writer.write(
                VideoRecord(
                    key=key,
                    appearance=rng.normal(size=(t, 2048)),
                    appearance_objects=rng.normal(size=(t, 10, 2048)),
                    motion=rng.normal(size=(t, 2048)),
                    motion_objects=rng.normal(size=(t, 10, 2048)),
                    box_geometry=rng.uniform(size=(t, 10, 6)),
                )
            )
        writer.consolidate()


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
