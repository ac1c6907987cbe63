"""`masn demo` end to end in its quick setting: every stage runs and leaves its outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.image
import pytest

from masn.extract.store.reader import FeatureStore
from masn.pipeline.cli import main
from masn.pipeline.examples.demo import QUICK_CLIPS, results_table
from masn.pipeline.examples.demo_sample import KINDS, REAL_KEY, TEST_CLIPS
from masn.pipeline.examples.settings import QUICK_EPOCHS
from tests.pipeline.serve.conftest import check_serve_command


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_says_it_used_random_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "MASN demo finished (RANDOM WEIGHTS)" in printed
    # One banner, naming what happened (no weights), not a flag the user never passed.
    assert caplog.text.count("RANDOM WEIGHTS:") == 1 and "--random-weights" not in caplog.text
    assert "no published weights in" in caplog.text
    assert "masn weights fetch" in caplog.text and "make weights" in caplog.text
    # The quick demo: its clips only, two epochs per question kind.
    stored = sorted(key for key in FeatureStore(out / "features.h5") if key != REAL_KEY)
    assert stored == sorted(clip.key for clip in QUICK_CLIPS)
    assert (out / "features.h5").is_file()
    for kind in KINDS:
        run = out / "runs" / kind
        metrics = json.loads((run / "evaluate-test" / "metrics.json").read_text())
        assert metrics["masn"]["questions"] > 0
        assert json.loads((run / "report.json").read_text())["epochs_run"] == QUICK_EPOCHS
        assert (run / "best.pt").is_file() and (run / "report.json").is_file()
        assert str(run) in printed
    assert "baseline without the video" in printed
    for title in ("open-ended", "count", "multiple choice"):
        assert f"\n  {title} " in printed
    figure = out / "answer.png"
    assert str(figure) in printed and matplotlib.image.imread(figure).shape[0] > 100
    real = out / "bigbuckbunny.png"
    assert str(real) in printed and matplotlib.image.imread(real).shape[0] > 100
    # The answered question is about a held-out clip.
    answered = [line.strip() for line in printed.splitlines() if "/videos/shapes/" in line]
    assert len(answered) == 1 and Path(answered[0]).stem in TEST_CLIPS
    # It ends with the command that serves its outputs, which works as printed.
    serve = printed.strip().splitlines()[-1].strip()
    assert serve.startswith(f"masn serve --store {out / 'features.h5'} --run {out / 'runs'}")
    check_serve_command(serve, tmp_path)

    # A second demo reuses the features and the finished runs.
    caplog.clear()
    assert main(["demo", "--out", str(out), "--quick", "--device", "cpu"]) == 0
    assert "already in" in caplog.text and "resumed" in caplog.text


def test_results_table_puts_masn_next_to_its_baseline_and_chance() -> None:
    runs = {
        "open_ended": {
            "test": {"questions": 151, "accuracy": 88.1},
            "baseline": {"questions": 151, "accuracy": 10.6, "answer": "move", "chance": 7.69},
        },
        "count": {
            "test": {"questions": 61, "accuracy": 70.0, "mse": 0.4567},
            "baseline": {"questions": 61, "mse": 1.234, "mean": 2.5634, "chance_mse": 2.45},
        },
        "multiple_choice": {
            "test": {"questions": 90, "accuracy": 72.22},
            "baseline": {"questions": 90, "accuracy": 30.0, "chance": 20.0},
        },
    }
    header, *rows = (line.split("  ") for line in results_table(runs))
    cells = [[cell.strip() for cell in row if cell.strip()] for row in [header, *rows]]
    assert cells[0] == ["kind", "test questions", "MASN", "baseline without the video", "chance"]
    assert cells[1] == ["open-ended", "151", "88.1 %", "10.6 % (always 'move')", "7.7 %"]
    assert cells[2] == ["count", "61", "MSE 0.46", "MSE 1.23 (always 2.56)", "MSE 2.45"]
    assert cells[3] == ["multiple choice", "90", "72.2 %", "30.0 % (answer only)", "20.0 %"]
