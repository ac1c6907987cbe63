"""Network batching: a batch that fails is rerun one video at a time, so only the video that
breaks it fails."""

from __future__ import annotations

import logging

from masn.extract.store.reader import FeatureStore
from masn.pipeline.benchmarks.stand_ins import StandInNetworks
from tests.builders import (
    TINY_EXTRACTION,
    bright,
    extract_with_stand_ins,
    failure_entries,
    stand_in_videos,
)


class _Poisoned(StandInNetworks):
    """Fails on any batch that holds a frame of random pixels (the 'noise' clip)."""

    def forward(self, images, scales, frames, clips, sizes):
        if any(bright(frame) for frame in frames):
            raise RuntimeError("poisoned batch")
        return super().forward(images, scales, frames, clips, sizes)


def test_a_network_failure_fails_only_the_video_that_causes_it(tmp_path, caplog):
    sources = stand_in_videos(tmp_path, {"a.mp4": "long", "b.mp4": "noise", "c.mp4": "long"})
    with caplog.at_level(logging.WARNING):  # batches of 3: a a a | a b b (fails) | ...
        summary = extract_with_stand_ins(
            sources, tmp_path / "s.h5", _Poisoned(TINY_EXTRACTION), batch_size=3
        )
    assert "running them one video at a time" in caplog.text  # a mixed batch failed
    assert (summary.stored, summary.failed) == (2, 1)
    with FeatureStore(summary.store) as store:
        assert sorted(store) == ["a.mp4", "c.mp4"]
        assert all(store.num_frames(key) == 4 for key in store)
    failure = failure_entries(summary.store)["b.mp4"]
    assert failure["stage"] == "network" and "RuntimeError: poisoned batch" in failure["reason"]
