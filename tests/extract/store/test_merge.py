"""Merging the shard stores of a sharded run."""

from __future__ import annotations

import pytest

from masn.extract.store.merge import merge_stores
from masn.extract.store.reader import FeatureStore
from masn.extract.store.writer import StoreWriter
from tests.builders import (
    ODD_KEYS,
    STORE_CONFIG,
    STORE_WEIGHTS,
    assert_stored,
    synthetic_record,
    write_store,
)


def test_merge_shards(tmp_path):
    first = write_store(tmp_path / "rank0.h5", ODD_KEYS[:3])
    second = write_store(tmp_path / "rank1.h5", ODD_KEYS[2:])
    merged = merge_stores([first, second], tmp_path / "all.h5")
    with FeatureStore(merged) as store:
        assert sorted(store.keys()) == sorted(ODD_KEYS)
        assert store.provenance.config == STORE_CONFIG
        for key in ODD_KEYS:
            assert_stored(store.read(key), synthetic_record(key))


def test_merge_refuses_conflicts_and_foreign_shards(tmp_path):
    first = write_store(tmp_path / "rank0.h5", ["a", "b"])
    with StoreWriter(tmp_path / "rank1.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(synthetic_record("b", frames=7))
        writer.consolidate()
    with pytest.raises(ValueError, match="video 'b' differs between"):
        merge_stores([first, tmp_path / "rank1.h5"], tmp_path / "all.h5")
    assert not (tmp_path / "all.h5").exists()
    assert not list(tmp_path.glob("all.h5.tmp.*"))
    other = write_store(tmp_path / "other.h5", ["c"], config={**STORE_CONFIG, "fps": 5})
    with pytest.raises(ValueError, match="one extraction configuration"):
        merge_stores([first, other], tmp_path / "all.h5")
