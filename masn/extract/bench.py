"""Extraction benchmarks: speed (``run_extract_bench``) and memory (``run_memory_bench``).

Speed: end-to-end sampled frames/s against the detector alone, in one run. The Caffe-faithful
detector is ~98 % of the work, so the pipeline is judged by how close it gets to the detector's
own rate (target >= 0.9x) while decoding, ResNet-152, I3D and writing run alongside. Videos are
generated (moving shapes) and the networks are random: timing only.

Memory: peak resident memory of a whole extraction (main process and decode workers) on a short
and a long generated low-resolution video; it must not grow with the video's duration. The real
networks are far too slow on a CPU for a 30-minute video, so this bench runs ``StandInNetworks``
(outputs of the real shapes and dtypes computed from the pixels, no network weights): it measures
the pipeline around the networks, whose own memory does not depend on the video's length.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch import Tensor, nn

from masn.extract.networks.detector import preprocess
from masn.extract.networks.feature_networks import FeatureNetworks, FrameFeatures
from masn.extract.run.runner import extract_features
from masn.extract.settings import (
    BENCH_SIZES,
    MEMORY_LIMIT,
    ExtractBenchSettings,
    ExtractionConfig,
    MemoryBenchSettings,
    RunOptions,
)
from masn.extract.video.decode import decode_video
from masn.extract.video.sources import list_videos
from masn.runtime import autocast, default_precision, device_name, resolve_device
from masn.weights.installed import ROLE_FILES

log = logging.getLogger(__name__)

TARGETS_H100 = {"end_to_end_frames_per_s": 150, "end_to_end_over_detector": 0.9}


def write_video(path: Path, seconds: float, size: tuple[int, int], fps: int = 25, seed: int = 0):
    """An H.264/MPEG-4 clip of coloured rectangles moving over noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            frame = background.copy()
            for k in range(3):
                x = (i * (3 + k) + 40 * k) % max(1, width - width // 4)
                y = (height // 5) * (k + 1) % max(1, height - height // 4)
                frame[y : y + height // 4, x : x + width // 4] = (60 + 60 * k, 200 - 50 * k, 90)
            image = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def detector_rate(
    networks: FeatureNetworks, frames: list[np.ndarray], device: torch.device, batch: int
) -> float:
    """Sampled frames/s of the detector alone on already prepared, device-resident batches."""
    config = networks.config
    images = [preprocess(frame, config.detector) for frame in frames]
    batches = [
        (torch.from_numpy(np.stack([i[0] for i in images[s : s + batch]])).to(device), images[s][1])
        for s in range(0, len(images), batch)
    ]
    detector = networks.detector

    def run() -> None:
        with torch.inference_mode(), autocast(device, networks.config.precision):
            for tensor, scale in batches:
                detector(tensor, [scale] * len(tensor))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up
    start = time.perf_counter()
    run()
    return len(frames) / (time.perf_counter() - start)


def run_extract_bench(settings: ExtractBenchSettings) -> dict[str, Any]:
    """Sampled frames/s end to end and of the detector alone; returns a JSON-ready report."""
    batch_size, workers = settings.batch_size, settings.workers
    target = resolve_device(settings.device)
    size = settings.size or ("full" if target.type == "cuda" else "small")
    spec = BENCH_SIZES[size]
    precision = settings.precision or default_precision(target)
    config = ExtractionConfig(detector=spec["detector"], precision=precision)
    networks = FeatureNetworks.random(config).to_device(target)
    with tempfile.TemporaryDirectory() as folder:
        videos = Path(folder) / "videos"
        videos.mkdir()
        for index in range(spec["videos"]):
            write_video(videos / f"v{index:03d}.mp4", spec["seconds"], spec["frame"], seed=index)
        sources = list_videos(videos, "folder")
        sample = decode_video(sources[0].path).frames[:: config.sample_every][: 2 * batch_size]
        alone = detector_rate(networks, list(sample), target, batch_size)
        options = RunOptions(str(target), batch_size, workers)
        summary = extract_features(sources, Path(folder) / "bench.h5", config, networks, options)
    end_to_end = summary.sampled_frames / summary.seconds
    video_seconds = spec["videos"] * spec["seconds"] / summary.seconds
    return {
        "benchmark": "extraction",
        "device": device_name(target),
        "size": size,
        "precision": precision,
        "batch_size": batch_size,
        "workers": workers,
        "videos": spec["videos"],
        "frame": list(spec["frame"]),
        "detector_input": [spec["detector"].min_size, spec["detector"].max_size],
        "proposals": spec["detector"].post_nms_top_n,
        "sampled_frames": summary.sampled_frames,
        "detector_frames_per_s": round(alone, 2),
        "end_to_end_frames_per_s": round(end_to_end, 2),
        "end_to_end_over_detector": round(end_to_end / alone, 3),
        "video_seconds_per_s": round(video_seconds, 2),
        "targets_h100": TARGETS_H100,
    }


class StandInNetworks(nn.Module):
    """Stand-ins for ``FeatureNetworks``: the same inputs and outputs (shapes, dtypes, boxes
    inside the frame), computed from the pixels at almost no cost.

    For measuring what surrounds the networks (memory, decoding, writing) and for tests of the
    run's bookkeeping. The "features" are pixel means, not features.
    """

    def __init__(self, config: ExtractionConfig, width: int = 2048):
        super().__init__()
        self.config, self.width = config, width
        self.weights = {role: "stand-in (no weights)" for role in ROLE_FILES}

    def to_device(self, device: torch.device) -> StandInNetworks:
        return self.to(device)

    @torch.inference_mode()
    def forward(
        self, images: Tensor, scales: Sequence[float], frames: Tensor, clips: Tensor, sizes: Tensor
    ) -> FrameFeatures:
        """Same arguments as ``FeatureNetworks.forward``; one box per frame, the whole frame."""
        batch, boxes = len(images), self.config.detector.boxes
        appearance = (frames.float().mean(dim=(1, 2, 3)) / 255)[:, None].expand(-1, self.width)
        motion = (clips.float().mean(dim=(1, 2, 3, 4)) / 255)[:, None].expand(-1, self.width)
        size = sizes.float()
        whole = torch.stack(
            [size[:, 0] * 0, size[:, 1] * 0, size[:, 0] - 1, size[:, 1] - 1], dim=-1
        ).clamp(min=0)
        labels = torch.zeros(batch, boxes, dtype=torch.int64, device=images.device)
        scores = torch.full((batch, boxes), 0.5, device=images.device)
        return FrameFeatures(
            appearance=appearance.contiguous(),
            appearance_objects=appearance[:, None].expand(-1, boxes, -1).contiguous(),
            motion=motion.contiguous(),
            motion_objects=motion[:, None].expand(-1, boxes, -1).contiguous(),
            boxes=whole[:, None].expand(-1, boxes, -1).contiguous(),
            object_labels=labels,
            object_scores=scores,
            attribute_labels=labels.clone(),
            attribute_scores=scores.clone(),
        )


def tree_memory(pid: int) -> tuple[int, int]:
    """Resident bytes (RSS) and proportional set size (PSS: shared pages split between their
    users) of process ``pid`` and all its descendants, summed (Linux /proc).

    Forked decode workers share most of their pages with the main process: RSS counts those
    once per process, PSS once in all.
    """
    rss = pss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith(("Rss:", "Pss:")):
                        value = int(line.split()[1]) * 1024
                        rss, pss = (rss + value, pss) if line[0] == "R" else (rss, pss + value)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process ended meanwhile
    return rss, pss


def _extract_with_stand_ins(videos: str, store: str, workers: int, batch_size: int) -> None:
    """The measured run (in a fresh process): the generated video, stand-in networks."""
    config = ExtractionConfig(detector=BENCH_SIZES["small"]["detector"])
    options = RunOptions("cpu", batch_size, workers)
    sources = list_videos(videos, "folder")
    summary = extract_features(sources, store, config, StandInNetworks(config), options)
    if summary.stored != len(sources):
        raise RuntimeError(f"the memory bench stored {summary.stored} of {len(sources)} videos")


def peak_extraction_memory(
    video: Path, store: Path, workers: int = 1, batch_size: int = 8, every: float = 0.02
) -> tuple[int, int, float]:
    """Peak RSS and PSS bytes of the process tree that extracts ``video`` into ``store`` (see
    ``tree_memory``; polled every ``every`` seconds), and the run's seconds. The run is a fresh
    spawned process, so nothing of an earlier run counts."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_extract_with_stand_ins, args=(str(video.parent), str(store), workers, batch_size)
    )
    started = time.perf_counter()
    process.start()
    peak_rss = peak_pss = 0
    while process.is_alive():
        rss, pss = tree_memory(process.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(every)
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the measured extraction failed (exit code {process.exitcode})")
    return peak_rss, peak_pss, time.perf_counter() - started


def run_memory_bench(
    settings: MemoryBenchSettings,
    frame: tuple[int, int] = (48, 64),
    fps: int = 25,
    workers: int = 1,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Peak RSS of extraction (whole process tree) for generated videos of each duration in
    ``settings.minutes``; ``bounded`` says whether the longest needs at most MEMORY_LIMIT x the
    shortest. The video's frame size and rate and the run's workers and batch size stay fixed."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for index, length in enumerate(settings.minutes):
            videos = Path(folder) / f"videos-{index}"
            videos.mkdir()
            video = videos / "video.mp4"
            write_video(video, 60 * length, frame, fps=fps, seed=index)
            store = Path(folder) / f"store-{index}.h5"
            rss, pss, seconds = peak_extraction_memory(video, store, workers, batch_size)
            runs.append(
                {
                    "minutes": length,
                    "video_mb": round(video.stat().st_size / 2**20, 2),
                    "store_mb": round(store.stat().st_size / 2**20, 1),
                    "peak_rss_mb": round(rss / 2**20, 1),
                    "peak_pss_mb": round(pss / 2**20, 1),
                    "seconds": round(seconds, 1),
                }
            )
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    return {
        "benchmark": "extraction memory",
        "networks": "stand-ins (bench.StandInNetworks: real output shapes, no weights)",
        "frame": list(frame),
        "source_fps": fps,
        "workers": workers,
        "batch_size": batch_size,
        "measured": "peak RSS (and PSS) summed over the extraction process and its decode "
        "workers; bounded compares RSS",
        "runs": runs,
        "longest_over_shortest": round(ratio, 3),
        "limit": MEMORY_LIMIT,
        "bounded": ratio <= MEMORY_LIMIT,
    }
