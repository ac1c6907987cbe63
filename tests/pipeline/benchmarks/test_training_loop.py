"""The end-to-end training benchmark (benchmarks/training_loop.py) on a CPU, with tiny settings."""

from __future__ import annotations

import json

import pytest

from masn.pipeline.benchmarks.settings import SHAPES, TrainBenchSettings
from masn.pipeline.benchmarks.training_loop import (
    RepeatedSteps,
    derive_annotations,
    run_train_bench,
    write_store,
)
from masn.pipeline.cli import parse
from masn.pipeline.examples.planted import WORDS
from masn.pipeline.qa.loading import StepSampler
from masn.settings import unchecked

TINY = {"frames": 4, "objects": 2, "features": 32, "words": 8, "vocab": 100}


def test_repeated_steps_gives_full_batches_across_epochs():
    batches = list(RepeatedSteps(StepSampler(10, 4, seed=3), 5))
    assert len(batches) == 5 and all(len(batch) == 4 for batch in batches)
    assert batches[:2] != batches[2:4]  # the second epoch has another order


def test_one_store_serves_every_head(tmp_path, monkeypatch):
    monkeypatch.setitem(SHAPES, "tiny", TINY)
    store, multiple_choice = write_store(tmp_path / "data", "tiny", 20)
    assert store.exists()
    choices = [json.loads(x) for x in (multiple_choice / "train.jsonl").read_text().splitlines()]
    open_ended = derive_annotations(multiple_choice, "open_ended", tmp_path / "oe")
    count = derive_annotations(multiple_choice, "count", tmp_path / "count")
    words = [json.loads(x) for x in (open_ended / "train.jsonl").read_text().splitlines()]
    counts = [json.loads(x) for x in (count / "train.jsonl").read_text().splitlines()]
    assert len(choices) == len(words) == len(counts) == 14
    for choice, word, number in zip(choices, words, counts, strict=True):
        right = choice["candidates"][choice["answer"]]
        assert word["video"] == number["video"] == choice["video"]
        assert word["answer"] == right and "candidates" not in word
        assert number["answer"] == WORDS.index(right) + 1


def test_cli_passes_the_options():
    _, args, _ = parse(
        ["bench", "train", "--steps", "3", "--workers", "0", "--videos", "40", "--cold"]
    )
    assert (args.steps, args.warmup, args.workers, args.videos) == (3, None, 0, 40)
    assert args.cases == ("frameqa", "action") and args.cold


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_cpu_run_reports_both_cases(tmp_path, monkeypatch, workers):
    monkeypatch.setitem(SHAPES, "tiny", TINY)
    with unchecked():  # "tiny" is a test size, not one of the command's choices
        settings = TrainBenchSettings(
            device="cpu",
            size="tiny",
            steps=2,
            warmup=1,
            workers=workers,
            videos=48,
            cold=workers == 1,
            dir=tmp_path,
        )
    report = run_train_bench(settings, hidden=64)
    report = json.loads(json.dumps(report))
    assert report["benchmark"] == "train_end_to_end" and report["workers"] == workers
    assert report["official_h100_samples_per_s"] == {"frameqa": 477, "action": 54}
    assert report["target_h100_samples_per_s"] == {"frameqa": 1500, "action": 600}
    assert report["store_bytes_per_sample"] > 0
    frameqa, action = report["results"]
    assert (frameqa["task"], frameqa["batch"], action["task"], action["batch"]) == (
        "frameqa",
        32,
        "action",
        16,
    )
    assert action["candidates"] == 5 and action["answer_classes"] is None
    assert frameqa["answer_classes"] == len(WORDS)
    for result in (frameqa, action):
        assert result["samples_per_s"] > 0 and result["steps"] == 2
        assert 0 <= result["data_wait_fraction"] <= 1 and result["peak_memory_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone
