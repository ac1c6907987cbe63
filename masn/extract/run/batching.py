"""Network batching: sampled frames of several videos packed into batches for the networks,
grouped by detector input size (Caffe-style detection does not pad).

A batch that fails is rerun one video at a time, so only the video that breaks it fails.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from masn.extract.networks.feature_networks import FeatureNetworks, FrameFeatures
from masn.extract.store.schema import VideoRecord
from masn.extract.video.inputs import FrameInputs, unexpected

log = logging.getLogger(__name__)


@dataclass
class NetworkFailure:
    """The networks failed on a video's frames (alone, or in a batch rerun video by video)."""

    key: str
    reason: str


def _network_reason(error: Exception) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "the GPU ran out of memory on this video's frames; try a smaller --batch-size"
    return unexpected(error)


Result = tuple[FrameInputs, dict[str, np.ndarray]] | NetworkFailure
"""A sampled frame with its row of every stored field, or a video the networks failed on."""


class Batcher:
    """Groups sampled frames by detector input size and runs full (or forced) batches.

    A batch that fails is rerun one video at a time; only the videos that still fail alone are
    reported (as ``NetworkFailure``), the others' rows come back as usual.
    """

    def __init__(self, networks: FeatureNetworks, device: torch.device, batch_size: int):
        self.networks, self.device, self.batch_size = networks, device, batch_size
        self.buckets: dict[tuple[int, ...], list[FrameInputs]] = defaultdict(list)
        self.frames = 0

    def add(self, item: FrameInputs) -> Iterator[Result]:
        """Queues ``item``; yields the results of the batch it completes, if any."""
        bucket = self.buckets[tuple(item.detector_image.shape)]
        bucket.append(item)
        if len(bucket) >= self.batch_size:
            yield from self._run(tuple(item.detector_image.shape))
        elif sum(map(len, self.buckets.values())) >= 2 * self.batch_size:
            yield from self._run(max(self.buckets, key=lambda size: len(self.buckets[size])))

    def drop(self, key: str) -> None:
        """Forgets the queued frames of ``key`` (a video that failed meanwhile)."""
        for size in self.buckets:
            self.buckets[size] = [item for item in self.buckets[size] if item.key != key]

    def flush(self) -> Iterator[Result]:
        """Runs every queued frame."""
        for size in list(self.buckets):
            yield from self._run(size)

    def _run(self, size: tuple[int, ...]) -> Iterator[Result]:
        items = self.buckets.pop(size, [])
        if not items:
            return
        try:
            rows = self._forward(items)
        except Exception as error:
            keys = list(dict.fromkeys(item.key for item in items))
            if len(keys) == 1:
                log.error("the networks failed on %s", keys[0], exc_info=True)
                yield NetworkFailure(keys[0], _network_reason(error))
                return
            log.warning(
                "a network batch of %d videos failed (%s); running them one video at a time",
                len(keys),
                error,
            )
            for key in keys:
                mine = [item for item in items if item.key == key]
                try:
                    rows = self._forward(mine)
                except Exception as alone:
                    log.error("the networks failed on %s", key, exc_info=True)
                    yield NetworkFailure(key, _network_reason(alone))
                else:
                    yield from zip(mine, rows, strict=True)
            return
        yield from zip(items, rows, strict=True)

    def _forward(self, items: list[FrameInputs]) -> list[dict[str, np.ndarray]]:
        move = {"device": self.device, "non_blocking": True}
        features = self.networks(
            torch.stack([i.detector_image for i in items]).to(**move),
            [i.scale for i in items],
            torch.stack([i.frame for i in items]).to(**move),
            torch.stack([i.clip for i in items]).to(**move),
            torch.tensor([[i.width, i.height] for i in items]).to(**move),
        )
        rows = _rows(features, items)
        self.frames += len(items)
        return rows


def _rows(features: FrameFeatures, items: list[FrameInputs]) -> list[dict[str, np.ndarray]]:
    """One row per sampled frame: every stored field, box geometry and frame time included."""
    arrays = {name: value.cpu().numpy() for name, value in vars(features).items()}
    rows = []
    for i, item in enumerate(items):
        row = {name: array[i] for name, array in arrays.items()}
        row["box_geometry"] = VideoRecord.geometry_from_boxes(row["boxes"], item.width, item.height)
        row["frame_times"] = np.float64(item.time)
        rows.append(row)
    return rows
