"""The synergy check (examples/synergy.py): questions answerable from one stream only.

The slow test trains appearance-only, motion-only and full MASN on the synthetic task (seed 0;
seeds 0-5 were measured for the margins) and asserts the check's expectations with wide margins
(observed values in comments): each single-stream model answers its own stream's questions
(observed 100 %) and stays near the 25 % chance on the other's (observed 19-33 % over 72 test
questions per type); full MASN answers both (observed 100 %); and full MASN's fusion weights lean
to the right stream per question type.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from masn.extract.store.reader import FeatureStore
from masn.pipeline.cli import main, parse
from masn.pipeline.examples.settings import SynergySettings, SynergyShape
from masn.pipeline.examples.synergy import (
    ANSWERS,
    TYPES,
    alpha_lean,
    run_synergy,
    write_synergy,
)

OWN_STREAM = 90.0  # accuracy (%) a model must reach on the questions its streams can answer
OTHER_STREAM = 50.0  # and must stay under on the others (chance 25 %, 5 sigma at 72 questions)
LEAN = 0.1  # observed 0.20-0.93 on seeds 0-5 (and >= 0.08 on 18 seeds of full MASN alone)


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and a shared machine stays usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_synergy(tmp_path_factory.mktemp("synergy") / "data", SynergyShape(videos=120))


def _rows(annotations: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (annotations / f"{split}.jsonl").read_text().splitlines()]


def test_every_video_gets_one_question_of_each_type(task):
    annotations, _ = task
    videos = {"train": 72, "val": 12, "test": 36}
    for split, count in videos.items():
        rows = _rows(annotations, split)
        assert len(rows) == 2 * count
        by_video: dict[str, list[str]] = {}
        for row in rows:
            assert row["answer"] in ANSWERS[row["type"]]
            by_video.setdefault(row["video"], []).append(row["type"])
        assert all(sorted(types) == list(TYPES) for types in by_video.values())
    questions = {
        t: {r["question"] for r in _rows(annotations, "train") if r["type"] == t} for t in TYPES
    }
    assert not questions["appearance"] & questions["motion"]  # the text tells the type


def test_each_label_is_planted_in_its_own_stream_only(task):
    """A nearest-class-mean reader of one stream's mean features, fitted on half the videos,
    recovers that stream's labels on the other half and stays near chance on the other's."""
    annotations, store = task
    rows = [row for split in ("train", "val", "test") for row in _rows(annotations, split)]
    labels = {
        t: {r["video"]: ANSWERS[t].index(r["answer"]) for r in rows if r["type"] == t}
        for t in TYPES
    }
    keys = sorted(labels["appearance"])
    with FeatureStore(store) as source:
        means = {"appearance": [], "motion": []}
        for key in keys:
            record = source.read(key)
            for stream in TYPES:
                frames = getattr(record, stream)
                objects = getattr(record, f"{stream}_objects")
                means[stream].append(
                    np.concatenate([frames, objects.reshape(-1, frames.shape[1])]).mean(0)
                )
    half = len(keys) // 2
    for stream in TYPES:
        features = np.asarray(means[stream], dtype=np.float64)
        for qtype in TYPES:
            y = np.array([labels[qtype][k] for k in keys])
            centres = np.stack(
                [features[:half][y[:half] == c].mean(0) for c in range(len(ANSWERS[qtype]))]
            )
            distances = ((features[half:, None] - centres[None]) ** 2).sum(-1)
            accuracy = 100 * np.mean(distances.argmin(1) == y[half:])
            if stream == qtype:
                assert accuracy >= OWN_STREAM, (stream, qtype, accuracy)
            else:
                assert accuracy <= OTHER_STREAM, (stream, qtype, accuracy)


def test_cli_flags():
    _, args, _ = parse(
        [
            "synergy",
            "--out",
            "x",
            "--seed",
            "3",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--videos",
            "40",
        ]
    )
    assert (args.out, args.seed, args.epochs, args.device, args.shape.videos) == (
        Path("x"),
        3,
        2,
        "cpu",
        40,
    )
    _, defaults, _ = parse(["synergy"])
    assert defaults == SynergySettings() and defaults.out is None


def test_alpha_lean_compares_question_types():
    alpha = {
        "appearance": {"appearance": 0.6, "motion": 0.1, "all": 0.3},
        "motion": {"appearance": 0.2, "motion": 0.7, "all": 0.1},
    }
    assert alpha_lean(alpha) == {"appearance": 0.4, "motion": 0.6}


@pytest.mark.slow
def test_cli_prints_json_then_the_table(tmp_path, capsys, one_thread):
    out = tmp_path / "synergy"
    line = ["synergy", "--out", str(out), "--videos", "40", "--epochs", "1", "--device", "cpu"]
    assert main(line) == 0
    printed = capsys.readouterr().out
    text, table = printed.split("\nmodel ", 1)
    result = json.loads(text)
    assert result == json.loads((out / "synergy.json").read_text())
    assert set(result["accuracy"]) == {"appearance-only", "motion-only", "full MASN"}
    assert set(result["alpha"]) == set(TYPES) and result["test_questions_per_type"] == 12
    assert "full MASN mean alpha" in table and "lean" in table
    assert main(line) == 2


@pytest.mark.slow
def test_each_stream_answers_only_its_own_questions_and_alpha_leans_to_it(tmp_path, one_thread):
    """Asserted (defaults: 240 videos, 72 test questions per type, 6 epochs):

    - appearance-only: >= 90 % on appearance questions, <= 50 % on motion questions;
    - motion-only: >= 90 % on motion questions, <= 50 % on appearance questions;
    - full MASN: >= 90 % on both;
    - full MASN's mean alpha on the test split, in eval mode:
      alpha[appearance-centred](appearance Qs) - alpha[appearance-centred](motion Qs) >= 0.1 and
      alpha[motion-centred](motion Qs) - alpha[motion-centred](appearance Qs) >= 0.1.
    """
    result = run_synergy(SynergySettings(out=tmp_path, seed=0, device="cpu"))
    accuracy = result["accuracy"]
    assert result["test_questions_per_type"] == 72
    single = {"appearance-only": "appearance", "motion-only": "motion"}
    for model, own in single.items():
        other = "motion" if own == "appearance" else "appearance"
        assert accuracy[model][own] >= OWN_STREAM, result
        assert accuracy[model][other] <= OTHER_STREAM, result
    assert min(accuracy["full MASN"][t] for t in TYPES) >= OWN_STREAM, result
    lean = result["alpha_lean"]
    assert lean["appearance"] >= LEAN and lean["motion"] >= LEAN, result
