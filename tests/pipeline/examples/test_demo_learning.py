"""With random networks MASN still learns the demo sample: held-out results far above the
baselines without the video (issue 12). Seeds 1-3 were measured; the suite trains seed 1 (each
seed costs about two minutes on two cores).

The features are extracted once, as `masn demo` does on a CPU without the published weights;
each seed trains and evaluates the three question kinds with the demo's settings, at a reduced
scale: open-ended, count and multiple-choice questions train for 10, 20 and 20 epochs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from masn.extract.run.collection import run_extraction
from masn.extract.settings import ExtractionConfig, ExtractSettings, RunOptions
from masn.pipeline.examples.demo import (
    CPU_DETECTOR,
    CPU_FRAME_SIZE,
    train_and_evaluate,
    training_settings,
)
from masn.pipeline.examples.demo_sample import prepare_videos
from masn.pipeline.examples.settings import DemoSettings

EPOCHS = {"open_ended": 10, "count": 20, "multiple_choice": 20}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    features = ExtractionConfig(frame_size=CPU_FRAME_SIZE, detector=CPU_DETECTOR["random"])
    settings = ExtractSettings(
        out=folder / "features.h5",
        videos=prepare_videos(folder / "videos"),
        random_weights=True,
        features=features,
        run=RunOptions("cpu", batch_size=8, workers=1),
    )
    assert run_extraction(settings) == 0
    return settings.out


@pytest.mark.slow
def test_masn_answers_held_out_clips_well_above_the_baselines(store: Path, tmp_path: Path) -> None:
    base = training_settings(DemoSettings(seed=1), store, "random", "cpu")
    runs = {
        kind: train_and_evaluate(replace(base, epochs=epochs), kind, tmp_path / kind, "cpu")
        for kind, epochs in EPOCHS.items()
    }
    open_ended, count, choice = runs["open_ended"], runs["count"], runs["multiple_choice"]
    assert open_ended["test"]["questions"] >= 30 and count["test"]["questions"] >= 20
    assert choice["test"]["questions"] >= 20
    # Seed 1: 86.8 % against a majority answer of 9.9 % (at 15 epochs seeds 1-3 gave 85-89 %).
    assert open_ended["test"]["accuracy"] >= 60
    assert open_ended["test"]["accuracy"] >= 2 * open_ended["baseline"]["accuracy"]
    # Seed 1: 76.7 % against 30 % for the candidates alone (68-80 % at 30 epochs, seeds 1-3).
    assert choice["test"]["accuracy"] >= 60
    assert choice["test"]["accuracy"] >= choice["baseline"]["accuracy"] + 25
    # MSE 0.26-0.39 against 1.24 for always the mean training count.
    assert count["test"]["mse"] <= count["baseline"]["mse"] / 2
