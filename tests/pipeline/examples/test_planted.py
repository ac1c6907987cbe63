"""The one writer of synthetic collections (examples/planted.py): its split rule, shared by the
planted-answer collections and `masn synergy`'s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masn.extract.store.reader import FeatureStore
from masn.pipeline.examples.planted import (
    SHARES,
    SPLITS,
    SyntheticShape,
    split_sizes,
    write_collection,
    write_synthetic,
)
from masn.pipeline.examples.settings import SynergyShape
from masn.pipeline.examples.synergy import SPLIT_SHARES, write_synergy


def _videos(annotations: Path) -> dict[str, list[str]]:
    """Each split's videos in file order, once each."""
    found = {}
    for split in SPLITS:
        rows = [json.loads(x) for x in (annotations / f"{split}.jsonl").read_text().splitlines()]
        found[split] = list(dict.fromkeys(row["video"] for row in rows))
    return found


def test_train_and_val_take_their_rounded_shares_and_test_the_rest():
    assert split_sizes(12, (0.7, 0.15)) == (8, 2, 2)
    assert split_sizes(48, (0.7, 0.15)) == (34, 7, 7)
    assert split_sizes(37, (0.6, 0.1)) == (22, 4, 11)
    assert split_sizes(240, (0.6, 0.1)) == (144, 24, 72)
    with pytest.raises(ValueError, match="more than all"):
        split_sizes(10, (0.8, 0.3))


def test_both_collections_are_split_in_order_by_the_one_rule(tmp_path):
    planted, _ = write_synthetic(
        tmp_path / "planted", "open_ended", SyntheticShape(videos=12, frames=2, objects=2, dim=8)
    )
    synergy, _ = write_synergy(
        tmp_path / "synergy", SynergyShape(videos=37, frames=2, objects=2, dim=8)
    )
    for folder, videos, shares in ((planted, 12, SHARES), (synergy, 37, SPLIT_SHARES)):
        found = _videos(folder)
        assert tuple(len(found[split]) for split in SPLITS) == split_sizes(videos, shares)
        in_order = [key for split in SPLITS for key in found[split]]
        assert in_order == [f"v{index:05d}" for index in range(videos)]


def test_the_writer_plants_each_signal_in_its_stream(tmp_path):
    appearance, motion = np.full(4, 50.0), np.full(4, -50.0)

    def questions(key: str, index: int) -> list[dict]:
        return [{"video": key, "question": "which?", "answer": str(index)}]

    annotations, store = write_collection(
        tmp_path,
        [(appearance, motion)] * 3,
        questions,
        frames=2,
        objects=3,
        noise=0.01,
        shares=(0.34, 0.33),
        provenance={"synthetic": "test", "seed": 0},
        rng=np.random.default_rng(0),
    )
    assert _videos(annotations) == {"train": ["v00000"], "val": ["v00001"], "test": ["v00002"]}
    with FeatureStore(store) as features:
        record = features.read("v00002")
    assert record.appearance.shape == (2, 4) and record.motion_objects.shape == (2, 3, 4)
    np.testing.assert_allclose(record.appearance_objects, 50, atol=0.1)
    np.testing.assert_allclose(record.motion, -50, atol=0.1)
