"""Training-set feature statistics for ``masn train --standardize`` (``masn.model.scaling``).

Mean and standard deviation per dimension of each feature input, over the sampled frames (and
their objects) the model reads of the training videos, each video counted once however many
questions it has.
"""

from __future__ import annotations

import logging

import numpy as np

from masn.model.scaling import SCALED_FIELDS
from masn.pipeline.qa.loading import Loading
from masn.pipeline.qa.questions import FeatureSource, Questions, frame_indices

log = logging.getLogger(__name__)

STATISTICS_VIDEOS = 1000
"""At most this many training videos (a seeded choice among them) give the statistics."""
STD_FLOOR = 1e-3
"""A dimension's standard deviation is at least this fraction of the field's mean one, so that
dimensions constant over the training videos (dead units) are not blown up elsewhere."""


def feature_statistics(
    questions: Questions, source: FeatureSource, loading: Loading, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, std) float32 per dimension of every field of ``SCALED_FIELDS``."""
    keys = sorted(set(questions.keys))
    if not keys:
        raise ValueError("no training videos to compute feature statistics from")
    if len(keys) > STATISTICS_VIDEOS:
        chosen = np.random.default_rng(seed).choice(len(keys), STATISTICS_VIDEOS, replace=False)
        keys = [keys[i] for i in sorted(chosen)]
    sums: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    rows = dict.fromkeys(SCALED_FIELDS, 0)
    for key in keys:
        record = source.read(key, SCALED_FIELDS)
        frames = frame_indices(len(record.appearance), loading.frames, loading.sampling)
        for name in SCALED_FIELDS:
            array = getattr(record, name)[frames]
            values = array.reshape(-1, array.shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0.0) + values.sum(axis=0)
            squares[name] = squares.get(name, 0.0) + np.square(values).sum(axis=0)
            rows[name] += len(values)
    statistics = {}
    for name in SCALED_FIELDS:
        mean = sums[name] / rows[name]
        std = np.sqrt(np.maximum(squares[name] / rows[name] - np.square(mean), 0.0))
        floor = max(STD_FLOOR * float(std.mean()), np.finfo(np.float32).tiny)
        statistics[name] = (mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))
    log.info("feature statistics from %d training videos (--standardize)", len(keys))
    return statistics
