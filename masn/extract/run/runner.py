"""An extraction run: videos -> decode workers -> batched networks -> feature store.

Decoding and input preparation run in DataLoader worker processes (tensors travel through
shared memory). The main process packs sampled frames of several videos into batches
(``batching``), runs the networks, and streams each video's rows, in position order, to a
background thread (``background_writer``) that appends them to the video's part file and
commits it once the video is complete. Memory therefore does not grow with a video's length. A
killed run loses only the videos in flight; a rerun skips committed ones.

Every video is isolated: an error while decoding, sampling, preprocessing, running the networks
or writing one video fails that video only. Failed videos are recorded in the failure log
(``failure_log``), one entry per key; a rerun retries each of them once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from masn import progress
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.background_writer import Abort, BackgroundWriter, Commit, Rows
from masn.extract.run.batching import Batcher, NetworkFailure, Result
from masn.extract.run.failure_log import MAX_ATTEMPTS, FailureLog, failures_path
from masn.extract.settings import ExtractionConfig, RunOptions
from masn.extract.store.writer import StoreWriter
from masn.extract.video.inputs import (
    FrameInputs,
    Stage,
    VideoDone,
    VideoFailed,
    unexpected,
    video_inputs,
)
from masn.extract.video.sources import VideoSource
from masn.runtime import data_loader, default_workers, resolve_device

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: stored this time, skipped (already stored), failed this time, and given
    up (failed twice before, not retried)."""

    store: Path
    failures: Path
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    given_up: int = 0
    sampled_frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The store holds at least one video (from this run or an earlier one)."""
        return self.stored + self.skipped > 0


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
    """A video in flight: rows waiting for their turn (position order) and its end marker."""

    source: VideoSource
    written: int = 0  # rows handed to the writer (positions 0 .. written - 1)
    waiting: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    done: VideoDone | None = None


def extract_features(
    sources: Sequence[VideoSource],
    store: str | Path,
    config: ExtractionConfig,
    networks: FeatureNetworks,
    options: RunOptions = RunOptions(),
    settings: str = "",
) -> RunSummary:
    """Extracts every video of ``sources`` not yet in ``store``; see the module docstring.
    ``settings``: the YAML of the command's settings, recorded in the store."""
    store = Path(store)
    device = resolve_device(options.device)
    summary = RunSummary(store=store, failures=failures_path(store))
    started = time.perf_counter()
    with StoreWriter(
        store, config.to_dict(), networks.weights, config.feature_dtype, settings
    ) as writer:
        failures = FailureLog(summary.failures)
        done = writer.done_keys()
        failures.forget(done)
        todo = [s for s in sources if s.key not in done]
        summary.skipped = len(sources) - len(todo)
        if summary.skipped:
            log.info("%d of %d videos are already in %s", summary.skipped, len(sources), store)
        if not options.retry_failed:
            retry = [s for s in todo if failures.attempts(s.key) < MAX_ATTEMPTS]
            summary.given_up = len(todo) - len(retry)
            todo = retry
        if summary.given_up:
            log.warning(
                "skipping %d videos that failed %d times (reasons in %s); rerun with "
                "--retry-failed to try them again",
                summary.given_up,
                MAX_ATTEMPTS,
                summary.failures,
            )
        networks = networks.to_device(device)
        run = _Run(todo, config, networks, device, options, writer, failures, summary)
        run.extract()
        writer.consolidate()
    summary.seconds = time.perf_counter() - started
    return summary


class _Run:
    """The main loop of ``extract_features``: routes worker items, network rows and writer
    outcomes, and keeps the per-video bookkeeping."""

    def __init__(
        self,
        todo: list[VideoSource],
        config: ExtractionConfig,
        networks: FeatureNetworks,
        device: torch.device,
        options: RunOptions,
        writer: StoreWriter,
        failures: FailureLog,
        summary: RunSummary,
    ):
        self.todo, self.config = todo, config
        self.writer, self.failures, self.summary = writer, failures, summary
        self.batcher = Batcher(networks, device, options.batch_size)
        self.loader = data_loader(
            _VideoInputs(todo, config, options.decoder),
            device,
            min(default_workers() if options.workers is None else options.workers, len(todo)),
            batch_size=None,
        )
        self.sources = {source.key: source for source in todo}
        self.videos = {key: _Video(source) for key, source in self.sources.items()}
        self.failed: set[str] = set()

    def extract(self) -> None:
        items = iter(self.loader)  # forks the decode workers before any thread of ours starts
        self.background = BackgroundWriter(self.writer)
        self.progress = progress.bar(total=len(self.todo), unit="video", desc="extract")
        # Inside a video: a long one takes minutes on a CPU (its frame count is known at its end).
        self.frames = progress.bar(unit="frame", desc="sampled frames", position=1, leave=False)
        try:
            for item in items:
                if isinstance(item, FrameInputs):
                    if item.key not in self.failed:
                        self._collect(self.batcher.add(item))
                elif isinstance(item, VideoDone):
                    self._done(item)
                else:
                    self._fail(item.source.key, item.stage, item.reason)
                self._outcomes()
            self._collect(self.batcher.flush())
            for key, video in list(self.videos.items()):  # none, unless something is amiss
                wanted = "?" if video.done is None else video.done.sampled
                reason = f"{video.written} of {wanted} sampled frames came back"
                self._fail(key, "sample", unexpected(RuntimeError(reason)))
            self.background.close()
            self._outcomes()
        finally:
            self.frames.close()
            self.progress.close()
            self.background.stop()
        self.summary.sampled_frames = self.batcher.frames

    def _done(self, item: VideoDone) -> None:
        key = item.source.key
        if key in self.failed:
            return
        if item.sampled == 0:
            self._fail(key, "sample", f"no frames at {self.config.fps:g} fps")
            return
        self.videos[key].done = item
        self._finish_if_complete(key)

    def _collect(self, results: Iterator[Result]) -> None:
        """Routes a batch's rows to their videos, then hands each video's next rows (those in
        position order) to the writer as one block."""
        touched: dict[str, None] = {}
        for result in results:
            if isinstance(result, NetworkFailure):
                self._fail(result.key, "network", result.reason)
                continue
            item, row = result
            self.frames.update()
            if item.key not in self.failed:
                self.videos[item.key].waiting[item.position] = row
                touched[item.key] = None
        for key in touched:
            video = self.videos.get(key)
            if video is None:  # failed meanwhile
                continue
            block = []
            while video.written in video.waiting:
                block.append(video.waiting.pop(video.written))
                video.written += 1
            if block:
                arrays = {name: np.stack([row[name] for row in block]) for name in block[0]}
                self.background.put(Rows(key, arrays))
            self._finish_if_complete(key)

    def _finish_if_complete(self, key: str) -> None:
        video = self.videos[key]
        done = video.done
        if done is None or video.written < done.sampled:
            return
        metadata = {
            "path": str(done.source.path),
            "width": done.width,
            "height": done.height,
            "source_fps": done.source_fps if done.source_fps is not None else math.nan,
            "duration": done.duration,
            "frames": done.frames,
        }
        self.background.put(Commit(key, metadata))
        del self.videos[key]

    def _outcomes(self) -> None:
        for outcome in self.background.results():
            if outcome.reason is None:
                self.summary.stored += 1
                self.failures.forget([outcome.key])
                self.progress.update()
            else:
                self._fail(outcome.key, "write", outcome.reason)

    def _fail(self, key: str, stage: Stage, reason: str) -> None:
        if key in self.failed:
            return
        self.failed.add(key)
        source = self.sources[key]
        log.warning("skipping %s (%s): %s failed: %s", key, source.path, stage, reason)
        self.batcher.drop(key)
        self.videos.pop(key, None)
        self.background.put(Abort(key))
        self.failures.record(source, stage, reason)
        self.summary.failed += 1
        self.progress.update()
