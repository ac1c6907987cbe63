"""What a store holds: box geometry, the checks every array passes, metadata round trips."""

from __future__ import annotations

import os

import numpy as np
import pytest

from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import VideoRecord
from masn.extract.store.writer import StoreWriter
from tests.builders import STORE_CONFIG, STORE_WEIGHTS, synthetic_record


def test_geometry_from_boxes():
    boxes = np.array([[10, 20, 110, 60], [0, 0, 0, 0]], dtype=np.float32)
    geometry = VideoRecord.geometry_from_boxes(boxes, 200, 100)
    expected = [[0.05, 0.2, 0.55, 0.6, 0.5, 0.4], [0, 0, 0, 0, 0, 0]]
    np.testing.assert_allclose(geometry, expected, rtol=1e-6)
    assert geometry.dtype == np.float32


def test_shape_and_value_validation(tmp_path):
    with StoreWriter(tmp_path / "s.h5", STORE_CONFIG, STORE_WEIGHTS) as writer:
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


def test_a_path_that_is_not_utf8_survives_the_store(tmp_path):
    record = synthetic_record("caf%E9.mp4")
    record.path = os.fsdecode(b"/videos/caf\xe9.mp4")
    path = tmp_path / "s.h5"
    with StoreWriter(path, STORE_CONFIG, STORE_WEIGHTS) as writer:
        writer.write(record)
        writer.consolidate()
    with FeatureStore(path) as store:
        assert os.fsencode(store.read("caf%E9.mp4").path) == b"/videos/caf\xe9.mp4"
