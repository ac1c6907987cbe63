"""The store's HDF5 file: a damaged file is a one-line error for every reader."""

from __future__ import annotations

import pytest

from masn.errors import InvalidInput
from masn.extract.store.merge import merge_stores
from masn.extract.store.reader import FeatureStore
from masn.extract.store.store_file import DamagedStore
from tests.builders import ODD_KEYS, damage_store, write_store


@pytest.mark.parametrize("how", ["truncated", "emptied", "text"])
def test_a_damaged_store_is_one_line_for_readers(tmp_path, how):
    path = write_store(tmp_path / "s.h5", ODD_KEYS[:2])
    damage_store(path, how)
    with pytest.raises(DamagedStore, match=r"s\.h5 is damaged or not an HDF5 file") as caught:
        FeatureStore(path)
    assert "\n" not in str(caught.value) and "masn extract" in str(caught.value)
    with pytest.raises(InvalidInput, match="is damaged"):
        merge_stores([path], tmp_path / "merged.h5")
