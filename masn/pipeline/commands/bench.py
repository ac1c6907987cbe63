"""Benchmarks that print JSON."""

from __future__ import annotations

import json
from typing import Any

from masn.pipeline.benchmarks.settings import (
    ExtractBenchSettings,
    MemoryBenchSettings,
    ModelBenchSettings,
    TrainBenchSettings,
)
from masn.pipeline.commands import Command


def _print(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2))


def model(settings: ModelBenchSettings) -> int:
    from masn.pipeline.benchmarks.model_step import run_model_bench

    _print(run_model_bench(settings))
    return 0


def train(settings: TrainBenchSettings) -> int:
    from masn.pipeline.benchmarks.training_loop import run_train_bench

    _print(run_train_bench(settings))
    return 0


def extract(settings: ExtractBenchSettings) -> int:
    from masn.pipeline.benchmarks.extraction import run_extract_bench

    _print(run_extract_bench(settings))
    return 0


def memory(settings: MemoryBenchSettings) -> int:
    from masn.pipeline.benchmarks.memory import run_memory_bench

    report = run_memory_bench(settings)
    _print(report)
    return 0 if report["bounded"] else 1


ACTIONS = {
    "model": Command(ModelBenchSettings, model),
    "train": Command(TrainBenchSettings, train),
    "extract": Command(ExtractBenchSettings, extract),
    "memory": Command(MemoryBenchSettings, memory),
}
