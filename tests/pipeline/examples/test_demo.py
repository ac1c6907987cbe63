"""`masn demo` end to end in its quick setting: every stage runs and leaves its outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.image
import pytest

from masn.pipeline.cli import main
from masn.pipeline.examples.demo_sample import KINDS


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_says_it_used_random_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, caplog
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--epochs", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "MASN demo finished (RANDOM WEIGHTS)" in printed
    assert "RANDOM WEIGHTS" in caplog.text and "make weights" in caplog.text
    assert (out / "features.h5").is_file()
    for kind in KINDS:
        run = out / "runs" / kind
        metrics = json.loads((run / "evaluate-test" / "metrics.json").read_text())
        assert metrics["masn"]["questions"] > 0
        assert (run / "best.pt").is_file() and (run / "report.json").is_file()
        assert str(run) in printed
    assert "answer-only baseline" in printed
    figure = out / "answer.png"
    assert str(figure) in printed and matplotlib.image.imread(figure).shape[0] > 100

    # A second demo reuses the features and the finished runs.
    caplog.clear()
    assert main(["demo", "--out", str(out), "--quick", "--epochs", "1", "--device", "cpu"]) == 0
    assert "already in" in caplog.text and "resumed" in caplog.text
