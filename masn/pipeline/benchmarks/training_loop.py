"""End-to-end training benchmark: samples/s of the ``masn train`` loop reading a store on disk.

Where ``model_step.py`` times the model step on one batch already on the device, this bench
writes a synthetic feature store (float16, the extractor's default) into a temporary folder,
builds the real :class:`~masn.pipeline.training.trainer.Trainer` on it and times its training
loop, step by step through :meth:`~masn.pipeline.training.trainer.Trainer.loop_step`: DataLoader
workers reading the HDF5 store, collation, pinned host memory, host-to-device copies, forward,
loss, backward and Adam. Validation is left out. The official implementation trains at 477
(FrameQA, batch 32) and 54 (Action, batch 16) samples/s on one H100 for the model step alone.

The timed window starts after ``warmup`` steps with the workers already running, so it should
be much longer than the prefetch queue (4 batches per worker) for the data wait to show. The
store was just written, so the page cache usually holds it; ``cold`` evicts it first.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler

from masn.errors import InvalidInput
from masn.extract.store.reader import FeatureStore
from masn.pipeline.benchmarks.settings import (
    OFFICIAL_H100_SAMPLES_PER_S,
    PAPER_CASES,
    SHAPES,
    TARGET_H100_SAMPLES_PER_S,
    BenchCase,
    Size,
    TrainBenchSettings,
)
from masn.pipeline.examples.planted import QUESTION, WORDS, SyntheticShape, write_synthetic
from masn.pipeline.qa.loading import StepSampler, loader
from masn.pipeline.qa.questions import VIDEO_FIELDS
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.settings import TrainSettings
from masn.pipeline.training.trainer import Trainer, training_task
from masn.runtime import (
    default_precision,
    device_name,
    peak_memory_mb,
    resolve_device,
    synchronize,
)

log = logging.getLogger(__name__)

CASES = {case.name: case for case in PAPER_CASES}
# Videos in the store (70 % of them train), timed steps and warmup steps, by device type.
DEFAULTS = {
    "cuda": {"videos": 1024, "steps": 300, "warmup": 30},
    "cpu": {"videos": 128, "steps": 10, "warmup": 2},
}


def write_store(folder: Path, size: Size, videos: int, seed: int = 0) -> tuple[Path, Path]:
    """One synthetic store with one question per video; returns (store, multiple-choice
    annotations). :func:`derive_annotations` rewrites the questions for the other heads."""
    shape = SHAPES[size]
    synthetic = SyntheticShape(
        videos=videos,
        questions_per_video=1,
        frames=shape["frames"],
        objects=shape["objects"],
        dim=shape["features"],
        classes=len(WORDS),
    )
    annotations, store = write_synthetic(folder, "multiple_choice", synthetic, seed)
    return store, annotations


def derive_annotations(multiple_choice: Path, head: str, out: Path) -> Path:
    """The multiple-choice questions of ``multiple_choice`` as ``head`` questions in ``out``:
    the right candidate's word as the open-ended answer, its class number + 1 as the count."""
    if head == "multiple_choice":
        return multiple_choice
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(multiple_choice.glob("*.jsonl")):
        lines = []
        for line in file.read_text().splitlines():
            row = json.loads(line)
            word = row["candidates"][row["answer"]]
            answer = word if head == "open_ended" else WORDS.index(word) + 1
            lines.append({"video": row["video"], "question": QUESTION[head], "answer": answer})
        (out / file.name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


class RepeatedSteps(Sampler[list[int]]):
    """``count`` full training batches of ``StepSampler``, epoch after epoch."""

    def __init__(self, steps: StepSampler, count: int):
        self.steps, self.count = steps, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[list[int]]:
        given, epoch = 0, 0
        while given < self.count:
            self.steps.set_epoch(epoch)
            for batch in self.steps:
                if len(batch) < self.steps.batch_size:
                    continue
                yield batch
                given += 1
                if given == self.count:
                    return
            epoch += 1


def bench_train_case(
    trainer: Trainer, case: BenchCase, steps: int, warmup: int, store: Path, cold: bool = False
) -> dict[str, Any]:
    """Times ``steps`` steps of the trainer's loop (:meth:`Trainer.loop_step`: the step, its
    divergence note and its logging), loader included, after ``warmup`` steps."""
    train, device = trainer.data.splits["train"], trainer.device
    batch_size = trainer.loading.batch_size
    if len(train) < batch_size:
        raise InvalidInput(f"{len(train)} training questions: fewer than one batch; more --videos")
    dataset, sampler = trainer.train_data()
    batches = iter(loader(dataset, RepeatedSteps(sampler, warmup + steps), trainer.loading, device))
    trainer.model.train()
    samples, waited = 0, 0.0
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            if cold:
                _evict(store)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            samples, waited, start = 0, 0.0, time.perf_counter()
        before = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - before
        loss = trainer.loop_step(batch)  # full batches: each step weighs 1
        samples += len(batch)
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak, memory_kind = peak_memory_mb(device)
    return {
        "task": case.name,
        "head": trainer.spec.head,
        "batch": batch_size,
        "candidates": case.candidates,
        "answer_classes": None if trainer.data.answers is None else len(trainer.data.answers),
        "train_questions": len(train),
        "steps": steps,
        "samples_per_s": round(samples / elapsed, 1),
        "step_ms": round(1000 * elapsed / steps, 2),
        "data_wait_fraction": round(waited / elapsed, 3),
        "peak_memory_mb": round(peak, 1),
        "memory_kind": memory_kind,
        "final_loss": round(float(loss), 4),
    }


def run_train_bench(settings: TrainBenchSettings, hidden: int = 512) -> dict[str, Any]:
    """Trains each case from a synthetic store in a temporary folder (inside ``settings.dir``
    when given); returns a JSON-ready report. Unset settings take the device's default (see
    DEFAULTS); ``hidden`` other than the paper's 512 only makes quick checks quicker."""
    target = resolve_device(settings.device)
    cases, workers, cold = settings.cases, settings.workers, settings.cold
    defaults = DEFAULTS["cuda" if target.type == "cuda" else "cpu"]
    size = settings.size or ("tgif" if target.type == "cuda" else "small")
    precision = settings.precision or default_precision(target)
    steps = defaults["steps"] if settings.steps is None else settings.steps
    warmup = defaults["warmup"] if settings.warmup is None else settings.warmup
    videos = defaults["videos"] if settings.videos is None else settings.videos
    name = device_name(target)
    shape = SHAPES[size]
    report: dict[str, Any] = {
        "benchmark": "train_end_to_end",
        "device": name,
        "torch": torch.__version__,
        "size": size,
        "shapes": {key: shape[key] for key in ("frames", "objects", "features")},
        "precision": precision,
        "hidden": hidden,
        "workers": workers,
        "videos": videos,
        "page_cache": "evicted" if cold else "warm",
        "official_h100_samples_per_s": _pick(OFFICIAL_H100_SAMPLES_PER_S, cases),
        "target_h100_samples_per_s": _pick(TARGET_H100_SAMPLES_PER_S, cases),
        "note": (
            f"synthetic questions with {len(WORDS)} answer classes (TGIF-QA FrameQA has "
            "1,746); the official figures are for the model step alone"
        ),
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="masn-bench-train-", dir=settings.dir) as temporary:
        root = Path(temporary)
        log.info("writing a %s store of %d videos in %s", size, videos, root)
        started = time.perf_counter()
        store, multiple_choice = write_store(root / "data", size, videos)
        report["store_write_s"] = round(time.perf_counter() - started, 1)
        report["store_bytes"] = store.stat().st_size
        report["store_bytes_per_sample"] = _bytes_per_video(store)
        for case_name in cases:
            case = CASES[case_name]
            annotations = derive_annotations(multiple_choice, case.task, root / case.name)
            config = TrainSettings(
                task="custom",
                annotations=str(annotations),
                features=str(store),
                out=str(root / f"run-{case.name}"),
                glove="random",
                frames=shape["frames"],
                batch_size=case.batch,
                workers=workers,
                device=str(target),
                precision=precision,
                hidden=hidden,
                epochs=1,
                baseline=False,
            )
            log.info("benchmarking %s (batch %d) on %s", case.name, case.batch, name)
            torch.manual_seed(0)
            trainer = Trainer(config, training_task(config), Process(), target)
            report["workers"] = trainer.loading.workers
            try:
                result = bench_train_case(trainer, case, steps, warmup, store, cold)
            finally:
                if trainer.logs is not None:
                    trainer.logs.close()
                trainer.data.source.close()
            report["results"].append(result)
            del trainer
            if target.type == "cuda":
                torch.cuda.empty_cache()
    return report


def _pick(table: dict[str, int], cases: tuple[str, ...]) -> dict[str, int]:
    return {name: value for name, value in table.items() if name in cases}


def _bytes_per_video(store: Path) -> int:
    """Bytes the loader reads per question (one video's model inputs, as stored)."""
    with FeatureStore(store) as source:
        record = source.read(source.keys()[0], tuple(VIDEO_FIELDS))
    return sum(getattr(record, field).nbytes for field in VIDEO_FIELDS)


def _evict(path: Path) -> None:
    """Drops ``path`` from the page cache (Linux), so that reads come from the disk."""
    if not hasattr(os, "posix_fadvise"):
        log.warning("cannot evict %s from the page cache on this system", path)
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
