"""Extraction speed benchmark (`masn bench extract`): sampled frames/s against the detector.

End-to-end sampled frames/s against the detector alone, in one run. The Caffe-faithful detector
is ~98 % of the work, so the pipeline is judged by how close it gets to the detector's own rate
(target >= 0.9x) while decoding, ResNet-152, I3D and writing run alongside. Videos are generated
(moving shapes) and the networks are random: timing only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masn.extract.networks.detector import preprocess
from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.runner import extract_features
from masn.extract.settings import ExtractionConfig, RunOptions
from masn.extract.video.decode import decode_video
from masn.extract.video.sources import list_videos
from masn.pipeline.benchmarks.settings import BENCH_SIZES, ExtractBenchSettings
from masn.pipeline.benchmarks.synthetic_video import write_video
from masn.runtime import autocast, default_precision, device_name, resolve_device

TARGETS_H100 = {"end_to_end_frames_per_s": 150, "end_to_end_over_detector": 0.9}


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
