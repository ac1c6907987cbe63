"""Extraction memory benchmark (`masn bench memory`): peak memory must not grow with duration.

Peak resident memory of a whole extraction (main process and decode workers) on a short and a
long generated low-resolution video. The real networks are far too slow on a CPU for a
30-minute video, so this bench runs ``StandInNetworks`` (outputs of the real shapes and dtypes
computed from the pixels, no network weights): it measures the pipeline around the networks,
whose own memory does not depend on the video's length.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from masn.extract.run.runner import extract_features
from masn.extract.settings import ExtractionConfig, RunOptions
from masn.extract.video.sources import list_videos
from masn.pipeline.benchmarks.settings import BENCH_SIZES, MEMORY_LIMIT, MemoryBenchSettings
from masn.pipeline.benchmarks.stand_ins import StandInNetworks
from masn.pipeline.benchmarks.synthetic_video import write_video


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
        "networks": "stand-ins (StandInNetworks: real output shapes, no weights)",
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
