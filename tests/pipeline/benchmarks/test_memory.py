"""`masn bench memory`: extraction's peak memory does not grow with the video's duration."""

from __future__ import annotations

import pytest

from masn.pipeline.benchmarks.memory import run_memory_bench
from masn.pipeline.benchmarks.settings import MemoryBenchSettings


@pytest.mark.slow
def test_memory_does_not_grow_with_the_video_length():
    """A video 8 times longer (2 minutes: 180 sampled frames, about 16 MB of features) needs
    no more memory than a 15-second one, within the bench's bound (`masn bench memory` itself
    compares 1 and 30 minutes)."""
    report = run_memory_bench(MemoryBenchSettings(minutes=(0.25, 2.0)))
    assert report["bounded"], report
    short, long = report["runs"]
    assert long["store_mb"] > 5 * short["store_mb"]  # the long video's features were written
