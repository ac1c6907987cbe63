"""Part files: a video streamed block by block, aborted or inconsistent parts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS, VideoRecord, record_metadata
from masn.extract.store.writer import StoreWriter
from tests.builders import STORE_CONFIG, STORE_WEIGHTS, assert_stored, synthetic_record


def _arrays(record: VideoRecord) -> dict[str, np.ndarray]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name) is not None}


def test_a_part_written_block_by_block_equals_a_whole_record(tmp_path):
    record = synthetic_record("streamed.mp4", frames=7)
    rows = _arrays(record)
    with StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
        part = writer.begin(record.key)
        for start, stop in ((0, 3), (3, 4), (4, 7)):
            part.append({name: array[start:stop] for name, array in rows.items()})
        assert writer.done_keys() == set()  # not a committed video yet
        part.commit(**record_metadata(record))
        assert writer.done_keys() == {record.key}
        assert sorted(p.name for p in writer.parts_dir.iterdir()) == [
            ".lock",
            "provenance.json",
            "streamed.mp4.h5",
        ]
        writer.consolidate()
    with FeatureStore(tmp_path / "s.h5") as store:
        assert_stored(store.read(record.key), record)
    with h5py.File(tmp_path / "s.h5", "r") as file:
        group = file["videos/streamed.mp4"]
        assert all(group[name].chunks is None for name in group)  # contiguous, as before


def test_an_aborted_or_inconsistent_part_leaves_nothing(tmp_path):
    record = synthetic_record("a", frames=4)
    rows = _arrays(record)
    with StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
        with writer.begin("a") as part:
            part.append({name: array[:2] for name, array in rows.items()})
            assert any(p.suffix == ".tmp" for p in writer.parts_dir.iterdir())
        with pytest.raises(ValueError, match="inconsistent shapes"), writer.begin("a") as part:
            part.append({name: array[:2] for name, array in rows.items()})
            part.append({**rows, "appearance": rows["appearance"][:, :16]})
        with pytest.raises(ValueError, match="no sampled frames"), writer.begin("a") as part:
            part.commit(**record_metadata(record))
        assert not any(p.suffix == ".tmp" for p in writer.parts_dir.iterdir())
        assert writer.done_keys() == set()
