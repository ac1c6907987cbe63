"""An extraction run: videos -> decode workers -> batched networks -> feature store.

Decoding and input preparation run in DataLoader worker processes (tensors travel through
shared memory). The main process packs sampled frames of several videos into batches (grouped by
detector input size, since Caffe-style detection does not pad), runs the networks, and streams
each video's rows, in position order, to a background thread that appends them to the video's
part file and commits it once the video is complete. Memory therefore does not grow with a
video's length. A killed run loses only the videos in flight; a rerun skips committed ones.

Every video is isolated: an error while decoding, sampling, preprocessing, running the networks
or writing one video fails that video only. A network batch that fails is rerun one video at a
time, so only the video that breaks it fails. Failed videos are recorded in
``OUT.failures.jsonl``, one entry per key; a rerun retries each of them once, after which they
are skipped until ``RunOptions.retry_failed`` asks for them again.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from masn.atomic import write_text
from masn.extract.networks.feature_networks import FeatureNetworks, FrameFeatures
from masn.extract.settings import ExtractionConfig, RunOptions
from masn.extract.store.parts import PartWriter
from masn.extract.store.schema import VideoRecord
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

MAX_ATTEMPTS = 2
"""Failures after which reruns skip a video (unless ``RunOptions.retry_failed``)."""


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


def failures_path(store: Path) -> Path:
    return store.with_name(store.name + ".failures.jsonl")


class FailureLog:
    """``OUT.failures.jsonl``: one JSON line per video that failed and is not stored.

    Entries hold key, path, stage (decode, sample, preprocess, network, write), reason,
    attempts (failures so far) and time (UTC). The file is rewritten atomically (temporary file,
    fsync, rename) on every change, so it never repeats a key nor holds a half line; it is
    removed when no failure is left.
    """

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            bad = 0
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["key"])] = entry
                except (ValueError, TypeError, KeyError):
                    bad += 1
            if bad:
                log.warning("%s: ignored %d unreadable lines", path, bad)

    def attempts(self, key: str) -> int:
        return int(self.entries.get(key, {}).get("attempts", 0))

    def record(self, source: VideoSource, stage: Stage, reason: str) -> None:
        """Records one more failure of ``source``."""
        self.entries[source.key] = {
            "key": source.key,
            "path": str(source.path),
            "stage": stage,
            "reason": reason,
            "attempts": self.attempts(source.key) + 1,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._save()

    def forget(self, keys: Iterable[str]) -> None:
        """Drops the entries of ``keys`` (videos now stored)."""
        gone = [key for key in keys if key in self.entries]
        for key in gone:
            del self.entries[key]
        if gone:
            self._save()

    def _save(self) -> None:
        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        write_text(self.path, "".join(json.dumps(entry) + "\n" for entry in self.entries.values()))


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
class _Rows:
    """The next rows of a video for its part file."""

    key: str
    arrays: dict[str, np.ndarray]


@dataclass
class _Commit:
    key: str
    metadata: dict[str, Any]


@dataclass
class _Abort:
    key: str


@dataclass
class _Outcome:
    """What the writer thread did with a video: stored, or failed with a reason."""

    key: str
    reason: str | None = None


def _write_reason(error: Exception) -> str:
    if isinstance(error, ValueError):  # the store's checks: shapes, values, dtype range
        return str(error)
    if isinstance(error, OSError):
        return f"cannot write the part file: {error.strerror or error}"
    return unexpected(error)


class _BackgroundWriter:
    """Writes the videos' rows and commits their parts on a thread, so the networks never wait
    for the disk. A video whose writing fails is aborted and reported; the others go on."""

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.queue: queue.Queue[_Rows | _Commit | _Abort | None] = queue.Queue(maxsize=16)
        self.outcomes: queue.Queue[_Outcome] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        parts: dict[str, PartWriter] = {}
        failed: set[str] = set()
        try:
            while (order := self.queue.get()) is not None:
                if isinstance(order, _Abort):
                    if (part := parts.pop(order.key, None)) is not None:
                        part.abort()
                    continue
                if order.key in failed:
                    continue
                try:
                    if isinstance(order, _Rows):
                        if order.key not in parts:
                            parts[order.key] = self.writer.begin(order.key)
                        parts[order.key].append(order.arrays)
                    else:
                        parts.pop(order.key).commit(**order.metadata)
                        self.outcomes.put(_Outcome(order.key))
                except Exception as error:
                    if not isinstance(error, (ValueError, OSError)):
                        log.error("writing %s failed", order.key, exc_info=True)
                    if (part := parts.pop(order.key, None)) is not None:
                        part.abort()
                    failed.add(order.key)
                    self.outcomes.put(_Outcome(order.key, _write_reason(error)))
        except BaseException as error:  # reported to the main thread
            self.error = error
        finally:
            for part in parts.values():
                part.abort()

    def put(self, order: _Rows | _Commit | _Abort) -> None:
        self._check()
        self.queue.put(order)

    def results(self) -> list[_Outcome]:
        """The outcomes reported since the last call."""
        found = []
        while True:
            try:
                found.append(self.outcomes.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        """Writes what is queued, then stops the thread; raises if the thread itself failed."""
        self.stop()
        self._check()

    def stop(self) -> None:
        """Stops the thread after what is queued (parts not committed by then are aborted)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the writer of {self.writer.path} failed") from self.error


@dataclass
class _NetworkFailure:
    """The networks failed on a video's frames (alone, or in a batch rerun video by video)."""

    key: str
    reason: str


def _network_reason(error: Exception) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return "the GPU ran out of memory on this video's frames; try a smaller --batch-size"
    return unexpected(error)


Result = tuple[FrameInputs, dict[str, np.ndarray]] | _NetworkFailure


class _Batcher:
    """Groups sampled frames by detector input size and runs full (or forced) batches.

    A batch that fails is rerun one video at a time; only the videos that still fail alone are
    reported (as ``_NetworkFailure``), the others' rows come back as usual.
    """

    def __init__(self, networks: FeatureNetworks, device: torch.device, batch_size: int):
        self.networks, self.device, self.batch_size = networks, device, batch_size
        self.buckets: dict[tuple[int, ...], list[FrameInputs]] = defaultdict(list)
        self.frames = 0

    def add(self, item: FrameInputs) -> Iterator[Result]:
        bucket = self.buckets[tuple(item.detector_image.shape)]
        bucket.append(item)
        if len(bucket) >= self.batch_size:
            yield from self._run(tuple(item.detector_image.shape))
        elif sum(map(len, self.buckets.values())) >= 2 * self.batch_size:
            yield from self._run(max(self.buckets, key=lambda size: len(self.buckets[size])))

    def drop(self, key: str) -> None:
        for size in self.buckets:
            self.buckets[size] = [item for item in self.buckets[size] if item.key != key]

    def flush(self) -> Iterator[Result]:
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
                yield _NetworkFailure(keys[0], _network_reason(error))
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
                    yield _NetworkFailure(key, _network_reason(alone))
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
) -> RunSummary:
    """Extracts every video of ``sources`` not yet in ``store``; see the module docstring."""
    store = Path(store)
    device = resolve_device(options.device)
    summary = RunSummary(store=store, failures=failures_path(store))
    started = time.perf_counter()
    with StoreWriter(store, config.to_dict(), networks.weights, config.feature_dtype) as writer:
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
        self.batcher = _Batcher(networks, device, options.batch_size)
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
        self.background = _BackgroundWriter(self.writer)
        self.progress = tqdm(total=len(self.todo), unit="video", desc="extract", dynamic_ncols=True)
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
            if isinstance(result, _NetworkFailure):
                self._fail(result.key, "network", result.reason)
                continue
            item, row = result
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
                self.background.put(_Rows(key, arrays))
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
        self.background.put(_Commit(key, metadata))
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
        self.background.put(_Abort(key))
        self.failures.record(source, stage, reason)
        self.summary.failed += 1
        self.progress.update()
