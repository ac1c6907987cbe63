"""Features of one video from Python (``masn.extract_video``, ``Extractor``): the same arrays
as a ``masn extract`` run, and the failures a user meets as one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import masn
from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.runner import extract_features
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import FIELDS
from masn.extract.video.sources import VideoSource
from tests.builders import STAND_IN_OPTIONS, TINY_EXTRACTION, write_sized


def test_extract_video_gives_what_masn_extract_stores(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_sized(clip, 64, 48, count=24, rate=12)
    record = masn.extract_video(
        clip, random_weights=True, seed=3, device="cpu", config=TINY_EXTRACTION
    )
    networks = FeatureNetworks.random(TINY_EXTRACTION, seed=3)
    source = VideoSource("clip.mp4", clip.resolve())
    summary = extract_features(
        [source], tmp_path / "run.h5", TINY_EXTRACTION, networks, STAND_IN_OPTIONS
    )
    with FeatureStore(summary.store) as store:
        stored = store.read("clip.mp4")
    assert record.key == "clip.mp4" and record.path == stored.path
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(record, name), getattr(stored, name), err_msg=name)


def test_one_extractor_serves_many_videos(tmp_path, monkeypatch):
    loaded = []
    random = FeatureNetworks.random
    monkeypatch.setattr(
        FeatureNetworks, "random", lambda *a, **k: loaded.append(1) or random(*a, **k)
    )
    extractor = masn.Extractor.load(random_weights=True, device="cpu", config=TINY_EXTRACTION)
    assert extractor.device == torch.device("cpu") and extractor.config == TINY_EXTRACTION
    records = []
    for index in range(2):
        write_sized(tmp_path / f"v{index}.mp4", 64, 48, count=6 + 6 * index, rate=12)
        records.append(extractor.extract(tmp_path / f"v{index}.mp4"))
    assert len(loaded) == 1
    assert [r.appearance.shape[0] for r in records] == [1, 2]


def test_failures_are_one_line_errors(tmp_path, monkeypatch):
    extractor = masn.Extractor.load(random_weights=True, device="cpu", config=TINY_EXTRACTION)
    with pytest.raises(MissingInput, match="no video at"):
        extractor.extract(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InvalidInput, match=r"cannot read the video .*text\.mp4: "):
        extractor.extract(tmp_path / "text.mp4")
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingInput, match="masn weights fetch"):
        masn.extract_video(tmp_path / "text.mp4", device="cpu", config=TINY_EXTRACTION)
