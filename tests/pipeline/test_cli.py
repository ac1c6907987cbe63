"""The `masn` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from masn.pipeline.cli import main


def test_console_script_lists_subcommands():
    script = Path(sys.executable).with_name("masn")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "bench" in result.stdout


def test_bench_model_prints_the_report_as_json(capsys):
    assert main(["bench", "model", "--steps", "1", "--warmup", "0", "--cases", "count"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "model_training_step" and report["size"] == "small"
    (result,) = report["results"]
    assert result["task"] == "count" and result["batch"] == 32
    assert result["samples_per_s"] > 0 and result["peak_memory_mb"] > 0
    assert report["official_h100_samples_per_s"] == {"frameqa": 477, "count": 486, "action": 54}


def test_setup_errors_end_with_a_message_not_a_traceback(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "no-weights-here"))
    (tmp_path / "clip.mp4").write_bytes(b"")  # listed, never decoded: the weights are missing
    code = main(["extract", "--videos", str(tmp_path), "--out", str(tmp_path / "x.h5")])
    assert code == 2
    assert "make weights" in caplog.text and "Traceback" not in caplog.text
