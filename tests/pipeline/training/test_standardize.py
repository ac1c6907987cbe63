"""Training-set feature statistics (masn train --standardize) and their place in checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from masn.extract.store.schema import VideoRecord
from masn.model.scaling import SCALED_FIELDS
from masn.pipeline.examples.planted import SyntheticShape, write_synthetic
from masn.pipeline.qa.loading import Loading
from masn.pipeline.qa.questions import Questions
from masn.pipeline.training import standardize
from masn.pipeline.training.checkpoint import load_checkpoint, load_predictor
from masn.pipeline.training.settings import TrainSettings
from masn.pipeline.training.trainer import train
from tests.builders import random_record


class MemorySource:
    """A feature source over records held in memory."""

    path = "memory"

    def __init__(self, records: list[VideoRecord]):
        self.records = {record.key: record for record in records}

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def keys(self) -> list[str]:
        return list(self.records)

    def read(self, key: str, fields=None) -> VideoRecord:
        return self.records[key]


def _questions(keys: list[str]) -> Questions:
    n = len(keys)
    empty = np.zeros((n, 2), np.int64)
    return Questions([], keys, empty, np.ones(n, np.int64), np.zeros(n), np.zeros(n, np.int64))


def _records(lengths: list[int]) -> list[VideoRecord]:
    rng = np.random.default_rng(0)
    return [
        random_record(f"v{i}", frames, rng, objects=2, appearance=5, motion=3)
        for i, frames in enumerate(lengths)
    ]


def test_statistics_cover_each_video_once_and_only_the_frames_the_model_reads() -> None:
    records = _records([3, 6, 2])
    source = MemorySource(records)
    keys = ["v0", "v1", "v1", "v1", "v2"]  # v1 has three questions: counted once
    loading = Loading(frames=4, sampling="first", batch_size=2, workers=0)
    statistics = standardize.feature_statistics(_questions(keys), source, loading, seed=0)
    assert set(statistics) == set(SCALED_FIELDS)
    for name in SCALED_FIELDS:
        rows = np.concatenate(
            [getattr(r, name)[:4].reshape(-1, getattr(r, name).shape[-1]) for r in records]
        )
        mean, std = statistics[name]
        assert mean.dtype == std.dtype == np.float32
        np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std, rows.std(0), rtol=1e-4)


def test_constant_dimensions_get_a_floor_instead_of_a_zero_deviation() -> None:
    records = _records([2, 2])
    records = [replace(r, appearance=r.appearance.copy()) for r in records]
    for record in records:
        record.appearance[:, 0] = 7.0
    loading = Loading(frames=2, sampling="first", batch_size=2, workers=0)
    statistics = standardize.feature_statistics(
        _questions(["v0", "v1"]), MemorySource(records), loading, seed=0
    )
    mean, std = statistics["appearance"]
    assert mean[0] == pytest.approx(7.0)
    assert std[0] == pytest.approx(standardize.STD_FLOOR * std.mean(), rel=1e-3)
    assert (std[1:] > 0.1).all()


def test_at_most_statistics_videos_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    records = _records([1] * 8)
    source = MemorySource(records)
    read = []
    monkeypatch.setattr(standardize, "STATISTICS_VIDEOS", 3)
    monkeypatch.setattr(
        source, "read", lambda key, fields=None: read.append(key) or source.records[key]
    )
    loading = Loading(frames=1, sampling="first", batch_size=2, workers=0)
    questions = _questions([r.key for r in records])
    standardize.feature_statistics(questions, source, loading, seed=5)
    first = list(read)
    read.clear()
    standardize.feature_statistics(questions, source, loading, seed=5)
    assert len(first) == 3 and read == first  # a seeded choice


def test_training_with_standardize_stores_the_statistics_in_the_checkpoint(tmp_path: Path) -> None:
    shape = SyntheticShape(videos=20, frames=3, objects=2, dim=8)
    annotations, store = write_synthetic(tmp_path / "data", "open_ended", shape, seed=0)
    settings = TrainSettings(
        task="custom",
        annotations=annotations,
        features=store,
        out=tmp_path / "run",
        glove="random",
        hidden=16,
        epochs=1,
        batch_size=8,
        workers=0,
        device="cpu",
        standardize=True,
    )
    train(settings)
    state = load_checkpoint(tmp_path / "run" / "best.pt")["state_dict"]
    predictor = load_predictor(tmp_path / "run" / "best.pt")
    assert predictor.model.config.standardize
    assert predictor.model.scaling is not None
    std = state["scaling.appearance_std"]
    assert std.shape == (8,) and (std > 0).all() and not torch.equal(std, torch.ones(8))
    # The same settings without --standardize cannot resume this run.
    plain = replace(settings, standardize=False, resume=True, epochs=2)
    with pytest.raises(Exception, match="standardize"):
        train(plain)
