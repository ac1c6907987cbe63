"""An extraction run: videos -> decode workers -> batched networks -> feature store.

Decoding and input preparation run in DataLoader worker processes (tensors travel through
shared memory). The main process packs sampled frames of several videos into batches (grouped by
detector input size, since Caffe-style detection does not pad), runs the networks, assembles
each video once all its frames are back, and hands it to a background thread that commits it to
the store. A killed run loses only the videos in flight; a rerun skips committed ones.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from masn.extract.config import ExtractionConfig
from masn.extract.inputs import FrameInputs, VideoDone, VideoFailed, video_inputs
from masn.extract.networks import FeatureNetworks, FrameFeatures
from masn.extract.sources import VideoSource
from masn.extract.store import StoreWriter, VideoRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How to run (not recorded in the store: it does not change the features).

    batch_size: sampled frames per network batch; workers: decode processes (0: in-process).
    """

    device: str = "auto"
    batch_size: int = 8
    workers: int = 2
    decoder: str = "pyav"


@dataclass
class RunSummary:
    store: Path
    failures: Path
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    sampled_frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The store holds at least one video (from this run or an earlier one)."""
        return self.stored + self.skipped > 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU (``cuda:local_rank``) when CUDA is available, else the CPU."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def failures_path(store: Path) -> Path:
    return store.with_name(store.name + ".failures.jsonl")


class _VideoInputs(IterableDataset):
    """Each DataLoader worker decodes its own share of the videos."""

    def __init__(self, sources: Sequence[VideoSource], config: ExtractionConfig, decoder: str):
        self.sources, self.config, self.decoder = list(sources), config, decoder

    def __iter__(self) -> Iterator[FrameInputs | VideoDone | VideoFailed]:
        worker = get_worker_info()
        mine = self.sources if worker is None else self.sources[worker.id :: worker.num_workers]
        for source in mine:
            yield from video_inputs(source, self.config, self.decoder)


@dataclass
class _Video:
    """Results of one video's sampled frames, as they come back from the networks."""

    rows: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    times: dict[int, float] = field(default_factory=dict)
    done: VideoDone | None = None

    @property
    def complete(self) -> bool:
        return self.done is not None and len(self.rows) == self.done.sampled


def _record(video: _Video) -> VideoRecord:
    done = video.done
    order = sorted(video.rows)
    stacked = {name: np.stack([video.rows[p][name] for p in order]) for name in video.rows[0]}
    return VideoRecord(
        key=done.source.key,
        appearance=stacked["appearance"],
        appearance_objects=stacked["appearance_objects"],
        motion=stacked["motion"],
        motion_objects=stacked["motion_objects"],
        boxes=stacked["boxes"],
        box_geometry=VideoRecord.geometry_from_boxes(stacked["boxes"], done.width, done.height),
        frame_times=np.array([video.times[p] for p in order]),
        object_labels=stacked["object_labels"],
        object_scores=stacked["object_scores"],
        attribute_labels=stacked["attribute_labels"],
        attribute_scores=stacked["attribute_scores"],
        path=str(done.source.path),
        width=done.width,
        height=done.height,
        source_fps=done.source_fps if done.source_fps is not None else math.nan,
        duration=done.duration,
        frames=done.frames,
    )


class _BackgroundWriter:
    """Commits finished videos on a thread so the networks never wait for the disk."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.queue: queue.Queue[VideoRecord | None] = queue.Queue(maxsize=16)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (record := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(record)
                except BaseException as error:  # reported to the main thread
                    self.error = error

    def put(self, record: VideoRecord) -> None:
        self._check()
        self.queue.put(record)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing to {self.writer.path} failed") from self.error


class _Batcher:
    """Groups sampled frames by detector input size and runs full (or forced) batches."""

    def __init__(self, networks: FeatureNetworks, device: torch.device, batch_size: int):
        self.networks, self.device, self.batch_size = networks, device, batch_size
        self.buckets: dict[tuple[int, ...], list[FrameInputs]] = defaultdict(list)
        self.frames = 0

    def add(self, item: FrameInputs) -> Iterator[tuple[FrameInputs, dict[str, np.ndarray]]]:
        bucket = self.buckets[tuple(item.detector_image.shape)]
        bucket.append(item)
        if len(bucket) >= self.batch_size:
            yield from self._run(tuple(item.detector_image.shape))
        elif sum(map(len, self.buckets.values())) >= 2 * self.batch_size:
            yield from self._run(max(self.buckets, key=lambda size: len(self.buckets[size])))

    def drop(self, key: str) -> None:
        for size in self.buckets:
            self.buckets[size] = [item for item in self.buckets[size] if item.key != key]

    def flush(self) -> Iterator[tuple[FrameInputs, dict[str, np.ndarray]]]:
        for size in list(self.buckets):
            yield from self._run(size)

    def _run(self, size: tuple[int, ...]) -> Iterator[tuple[FrameInputs, dict[str, np.ndarray]]]:
        items = self.buckets.pop(size, [])
        if not items:
            return
        move = {"device": self.device, "non_blocking": True}
        features = self.networks(
            torch.stack([i.detector_image for i in items]).to(**move),
            [i.scale for i in items],
            torch.stack([i.frame for i in items]).to(**move),
            torch.stack([i.clip for i in items]).to(**move),
            torch.tensor([[i.width, i.height] for i in items]).to(**move),
        )
        self.frames += len(items)
        rows = _rows(features)
        yield from zip(items, rows, strict=True)


def _rows(features: FrameFeatures) -> list[dict[str, np.ndarray]]:
    arrays = {name: value.cpu().numpy() for name, value in vars(features).items()}
    return [{name: array[i] for name, array in arrays.items()} for i in range(len(arrays["boxes"]))]


def extract_features(
    sources: Sequence[VideoSource],
    store: str | Path,
    config: ExtractionConfig,
    networks: FeatureNetworks,
    options: RunOptions = RunOptions(),
) -> RunSummary:
    """Extracts every video of ``sources`` not yet in ``store``; see the module docstring."""
    store = Path(store)
    device = resolve_device(options.device)
    summary = RunSummary(store=store, failures=failures_path(store))
    started = time.perf_counter()
    with StoreWriter(store, config.to_dict(), networks.weights, config.feature_dtype) as writer:
        done = writer.done_keys()
        todo = [s for s in sources if s.key not in done]
        summary.skipped = len(sources) - len(todo)
        if summary.skipped:
            log.info("%d of %d videos are already in %s", summary.skipped, len(sources), store)
        networks = networks.to_device(device)
        loader = DataLoader(
            _VideoInputs(todo, config, options.decoder),
            batch_size=None,
            num_workers=min(options.workers, len(todo)),
            pin_memory=device.type == "cuda",
        )
        batcher = _Batcher(networks, device, options.batch_size)
        items = iter(loader)  # forks the decode workers before any thread of ours starts
        background = _BackgroundWriter(writer)
        videos: dict[str, _Video] = defaultdict(_Video)
        progress = tqdm(total=len(todo), unit="video", desc="extract", dynamic_ncols=True)
        failures = _FailureLog(summary.failures)

        def finish(key: str) -> None:
            background.put(_record(videos.pop(key)))
            summary.stored += 1
            progress.update()

        def collect(results: Iterator[tuple[FrameInputs, dict[str, np.ndarray]]]) -> None:
            for item, row in results:
                video = videos[item.key]
                video.rows[item.position], video.times[item.position] = row, item.time
                if video.complete:
                    finish(item.key)

        try:
            for item in items:
                if isinstance(item, FrameInputs):
                    collect(batcher.add(item))
                elif isinstance(item, VideoDone):
                    videos[item.source.key].done = item
                    if videos[item.source.key].complete:
                        finish(item.source.key)
                else:
                    failures.add(item)
                    batcher.drop(item.source.key)
                    videos.pop(item.source.key, None)
                    summary.failed += 1
                    progress.update()
            collect(batcher.flush())
            background.close()
        finally:
            progress.close()
        writer.consolidate()
    summary.sampled_frames = batcher.frames
    summary.seconds = time.perf_counter() - started
    return summary


class _FailureLog:
    """Appends one JSON line (key, path, reason, time) per video that could not be decoded."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, item: VideoFailed) -> None:
        log.warning("skipping %s (%s): %s", item.source.key, item.source.path, item.reason)
        entry = {"key": item.source.key, "path": str(item.source.path), "reason": item.reason}
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.path.open("a") as log_file:
            log_file.write(json.dumps(entry) + "\n")
