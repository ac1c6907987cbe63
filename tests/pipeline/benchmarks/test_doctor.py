"""`masn doctor` / `make gpu-check`: the checks against known answers, the target table, and
the whole CPU self-test (the same code the GPU run uses, with small sizes)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.ops

from masn.pipeline.benchmarks.doctor import benchmark_plan, check_ops, run_gpu_tests, targets
from masn.pipeline.cli import main

CPU = torch.device("cpu")


def test_the_compiled_ops_give_the_known_answers():
    result = check_ops(CPU)
    assert result == {"ok": True, "nms_kept": [0, 2], "roi_align": [0.5, 1.5, 0.5, 1.5]}


def test_a_broken_op_fails_the_check(monkeypatch):
    monkeypatch.setattr(torchvision.ops, "nms", lambda boxes, scores, iou: torch.arange(3))
    assert check_ops(CPU)["ok"] is False


def test_gpu_tests_are_skipped_without_cuda():
    assert run_gpu_tests(CPU) == {"ok": True, "skipped": "no CUDA device: the gpu tests need one"}


def test_the_gpu_plan_is_the_papers_sizes_in_bf16():
    plan = benchmark_plan(torch.device("cuda"))
    assert (plan["model"].size, plan["train"].size, plan["extract"].size) == (
        "tgif",
        "tgif",
        "full",
    )
    assert {settings.precision for settings in plan.values()} == {"bf16"}
    assert plan["model"].cases == ("frameqa", "count", "action")
    assert plan["train"].cases == ("frameqa", "action")


def test_targets_compare_rates_from_below_and_tolerances_from_above():
    reports = {
        "model": {"results": [
            {"task": "frameqa", "samples_per_s": 1600.0, "bf16_max_rel_output_diff": 0.01},
            {"task": "action", "samples_per_s": 500.0, "bf16_max_rel_output_diff": 0.2},
        ]},
        "train": {"results": [{"task": "frameqa", "samples_per_s": 1499.9}]},
        "extract": {"end_to_end_frames_per_s": 151.0, "end_to_end_over_detector": 0.89},
    }  # fmt: skip
    rows = {row["figure"]: (row["value"], row["target"], row["pass"]) for row in targets(reports)}
    assert rows == {
        "model step frameqa samples/s": (1600.0, 1500, True),
        "model frameqa bf16 vs fp32": (0.01, 0.05, True),
        "model step action samples/s": (500.0, 600, False),
        "model action bf16 vs fp32": (0.2, 0.05, False),
        "train end to end frameqa samples/s": (1499.9, 1500, False),
        "extract end_to_end_frames_per_s": (151.0, 150, True),
        "extract end_to_end_over_detector": (0.89, 0.9, False),
    }


@pytest.mark.slow
def test_the_cpu_self_test_runs_everything_and_records_it(tmp_path, capsys):
    assert main(["doctor", "--device", "cpu", "--results", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    (record,) = tmp_path.glob("*-cpu.json")
    assert json.loads(record.read_text()) == report and report["record"] == str(record)
    assert report["ok"] is True and report["all_targets_met"] is None
    assert report["checks"]["torchvision_ops"]["ok"] and "cuda" not in report["checks"]
    assert report["checks"]["gpu_tests"]["skipped"].startswith("no CUDA device")
    model, train, extract = (report["benchmarks"][name] for name in ("model", "train", "extract"))
    assert [r["task"] for r in model["results"]] == ["frameqa", "count", "action"]
    assert [r["task"] for r in train["results"]] == ["frameqa", "action"]
    assert extract["size"] == "tiny" and extract["sampled_frames"] == 3
    assert all(r["samples_per_s"] > 0 for r in model["results"] + train["results"])
    assert len(report["targets"]) == 7 and all(row["pass"] is None for row in report["targets"])
    assert report["torch"] == torch.__version__ and report["device"].startswith("CPU")
