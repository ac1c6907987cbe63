"""Extraction benchmark: end-to-end sampled frames/s against the detector alone, in one run.

The Caffe-faithful detector is ~98 % of the work, so the pipeline is judged by how close it gets
to the detector's own rate (target >= 0.9x) while decoding, ResNet-152, I3D and writing run
alongside. Videos are generated (moving shapes) and the networks are random: timing only.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from masn.extract.config import ExtractionConfig
from masn.extract.decode import decode_video
from masn.extract.detector import DetectorConfig, preprocess
from masn.extract.networks import FeatureNetworks
from masn.extract.runner import RunOptions, extract_features, resolve_device
from masn.extract.sources import list_videos

log = logging.getLogger(__name__)

TARGETS_H100 = {"end_to_end_frames_per_s": 150, "end_to_end_over_detector": 0.9}

# video count, seconds each, frame (height, width), detector settings
SIZES: dict[str, dict[str, Any]] = {
    "full": {"videos": 16, "seconds": 10.0, "frame": (360, 640), "detector": DetectorConfig()},
    "small": {
        "videos": 4,
        "seconds": 2.0,
        "frame": (96, 128),
        "detector": DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12),
    },
}


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
        with torch.inference_mode(), networks._autocast(device):
            for tensor, scale in batches:
                detector(tensor, [scale] * len(tensor))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up
    start = time.perf_counter()
    run()
    return len(frames) / (time.perf_counter() - start)


def run_extract_bench(
    device: str = "auto",
    size: str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    precision: str | None = None,
) -> dict[str, Any]:
    target = resolve_device(device)
    size = size or ("full" if target.type == "cuda" else "small")
    spec = SIZES[size]
    precision = precision or ("bf16" if target.type == "cuda" else "fp32")
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
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "CPU",
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
