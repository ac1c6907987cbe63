"""Our store <-> the official MASN four-file layout: round trips, official keys, incomplete
videos."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from masn.errors import InvalidInput
from masn.extract.store.official_layout import OFFICIAL_FILES
from masn.extract.store.official_transfer import export_official, import_official
from masn.extract.store.reader import FeatureStore
from tests.builders import assert_stored, synthetic_record, write_store


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
            assert_stored(read, synthetic_record(key, full=False))
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


@pytest.mark.parametrize("how", ["width", "nan"])
def test_export_never_writes_damaged_data(tmp_path, how):
    """A video of another width was exported as it was (or tracebacked), NaN ones exported
    silently; now both are refused naming the video, and no official file is written."""
    store = write_store(tmp_path / "ours.h5", ["vid1", "vid2", "vid3"])
    with h5py.File(store, "a") as file:
        group = file["videos"]["vid2"]
        if how == "width":
            data = group["motion"][()]
            del group["motion"]
            group["motion"] = data[:, :1024]
        else:
            group["appearance"][0, 0] = np.nan
    expected = (
        r"cannot export .*ours\.h5: 1 of its videos is damaged: 'vid2' \(motion: expected "
        r"float16 \(T, 2048\), found float16 \(\d, 1024\)\)"
        if how == "width"
        else r"cannot export: video 'vid2' in .*ours\.h5: appearance holds NaN or infinite values"
        r".*; re-extract them, or leave them out with a key map that does not name them$"
    )
    with pytest.raises(InvalidInput, match=expected):
        export_official(store, tmp_path / "official", "msvd")
    assert not (tmp_path / "official").exists()  # no file, not even a temporary one or the folder
