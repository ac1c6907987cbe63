"""`masn doctor` (`make gpu-check`): does this install work on this device, and how fast is it?

Checks first, then measures: CUDA and bf16 where a GPU is asked for, torchvision's compiled
``nms`` and ``roi_align`` against known answers on the device (a CPU-only torch wheel beside a
CUDA torchvision breaks them), the ``gpu``-marked tests (in a checkout), then ``masn bench
model``, ``train`` and ``extract``. On a GPU the benchmarks run at the paper's sizes in bf16
(detector 600/1000 with 300 proposals; T = 20, 10 objects, 2048-d; FrameQA batch 32, Action 16)
and every figure is compared with its target (one H100: docs/design.md, "Performance targets");
on a CPU the same code runs with small sizes, as a self-test, and no target applies. One JSON
report is printed and written to ``RESULTS/<date>-<device>.json``.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

import masn
from masn import atomic
from masn.pipeline.benchmarks.extraction import TARGETS_H100, run_extract_bench
from masn.pipeline.benchmarks.model_step import run_model_bench
from masn.pipeline.benchmarks.settings import (
    BF16_TOLERANCE,
    TARGET_H100_SAMPLES_PER_S,
    DoctorSettings,
    ExtractBenchSettings,
    ModelBenchSettings,
    TrainBenchSettings,
)
from masn.pipeline.benchmarks.training_loop import run_train_bench
from masn.runtime import device_name, resolve_device

log = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[3]  # the checkout holding masn/ and tests/
TEST_TIMEOUT_S = 600


def benchmark_plan(device: torch.device) -> dict[str, Any]:
    """The three benchmarks' settings: the paper's sizes in bf16 on a GPU; on a CPU small sizes
    and few steps (a self-test of the same code, not a measurement worth comparing)."""
    where = str(device)
    if device.type == "cuda":
        return {
            "model": ModelBenchSettings(device=where, size="tgif", precision="bf16"),
            "train": TrainBenchSettings(device=where, size="tgif", precision="bf16"),
            "extract": ExtractBenchSettings(device=where, size="full", precision="bf16"),
        }
    return {
        "model": ModelBenchSettings(device=where, size="small", steps=1, warmup=0),
        "train": TrainBenchSettings(device=where, size="small", steps=1, warmup=0, videos=48),
        "extract": ExtractBenchSettings(device=where, size="tiny", batch_size=4, workers=0),
    }


def check_ops(device: torch.device) -> dict[str, Any]:
    """torchvision's compiled ``nms`` and ``roi_align`` on ``device`` against known answers."""
    from torchvision.ops import nms, roi_align

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    kept = nms(boxes.to(device), scores.to(device), 0.5).cpu().tolist()
    # On the ramp f(y, x) = x, each bin's average is the x of its sampling point.
    ramp = torch.arange(4, dtype=torch.float32).expand(1, 1, 4, 4).contiguous()
    box = torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]])
    pooled = roi_align(ramp.to(device), box.to(device), 2, 1.0, 1, aligned=True).cpu()
    expected = torch.tensor([[[[0.5, 1.5], [0.5, 1.5]]]])
    ok = kept == [0, 2] and torch.allclose(pooled, expected, atol=1e-6)
    return {"ok": ok, "nms_kept": kept, "roi_align": pooled.flatten().tolist()}


def check_cuda(device: torch.device) -> dict[str, Any]:
    """The GPU, its bf16 support and versions (only asked for on a CUDA device)."""
    properties = torch.cuda.get_device_properties(device)
    return {
        "ok": bool(torch.cuda.is_bf16_supported()),
        "bf16_supported": bool(torch.cuda.is_bf16_supported()),
        "capability": f"{properties.major}.{properties.minor}",
        "memory_gb": round(properties.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "driver": _driver_version(),
    }


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        found = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip().splitlines()[0] if found.stdout.strip() else None


def run_gpu_tests(device: torch.device) -> dict[str, Any]:
    """The ``gpu``-marked tests of the checkout, in a child pytest; skipped on a CPU or outside
    a checkout (a pip install has no tests)."""
    tests = REPOSITORY / "tests"
    if device.type != "cuda":
        return {"ok": True, "skipped": "no CUDA device: the gpu tests need one"}
    if not tests.is_dir():
        return {"ok": True, "skipped": f"no tests at {tests} (not a checkout)"}
    with tempfile.TemporaryDirectory(prefix="masn-doctor-") as folder:
        report = Path(folder) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(tests)]
        command += [f"--junitxml={report}", "-p", "no:cacheprovider"]
        started = time.perf_counter()
        try:
            run = subprocess.run(
                command, cwd=REPOSITORY, capture_output=True, text=True, timeout=TEST_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "reason": f"the gpu tests ran over {TEST_TIMEOUT_S} s"}
        counts = _junit_counts(report) if report.is_file() else {}
    result: dict[str, Any] = {"ok": run.returncode == 0, **counts}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if run.returncode != 0:
        result["output_tail"] = (run.stdout + run.stderr)[-3000:]
    return result


def _junit_counts(path: Path) -> dict[str, int]:
    text = path.read_text()
    found = re.search(r"<testsuite [^>]*>", text)
    header = found.group(0) if found else ""
    counts = dict(re.findall(r'(tests|failures|errors|skipped)="(\d+)"', header))
    return {name: int(value) for name, value in counts.items()}


def targets(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """Each measured figure with its target (one H100) and whether it is met."""
    rows = []
    for result in reports["model"]["results"]:
        task = result["task"]
        rate = TARGET_H100_SAMPLES_PER_S[task]
        rows.append(_row(f"model step {task} samples/s", result["samples_per_s"], rate))
        if "bf16_max_rel_output_diff" in result:
            deviation = result["bf16_max_rel_output_diff"]
            rows.append(_row(f"model {task} bf16 vs fp32", deviation, BF16_TOLERANCE, most=True))
    for result in reports["train"]["results"]:
        task = result["task"]
        rate = TARGET_H100_SAMPLES_PER_S[task]
        rows.append(_row(f"train end to end {task} samples/s", result["samples_per_s"], rate))
    extract = reports["extract"]
    for figure, target in TARGETS_H100.items():
        rows.append(_row(f"extract {figure}", extract[figure], target))
    return rows


def _row(figure: str, value: float, target: float, most: bool = False) -> dict[str, Any]:
    """``most``: the target is an upper bound (a tolerance), else a lower bound (a rate)."""
    met = value <= target if most else value >= target
    return {"figure": figure, "value": value, "target": target, "pass": bool(met)}


def run_doctor(settings: DoctorSettings) -> dict[str, Any]:
    """The whole check; returns the report (``ok``: every check passed) after writing it."""
    device = resolve_device(settings.device)
    name = device_name(device)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "doctor": "masn",
        "masn": masn.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "checks": {"torchvision_ops": check_ops(device)},
    }
    if device.type == "cuda":
        report["checks"]["cuda"] = check_cuda(device)
    if settings.tests:
        report["checks"]["gpu_tests"] = run_gpu_tests(device)
    plan = benchmark_plan(device)
    reports = {
        "model": run_model_bench(plan["model"]),
        "train": run_train_bench(plan["train"]),
        "extract": run_extract_bench(plan["extract"]),
    }
    report["benchmarks"] = reports
    rows = targets(reports)
    if device.type == "cuda":
        report["targets"] = rows
        report["all_targets_met"] = all(row["pass"] for row in rows)
    else:
        report["targets"] = [{**row, "pass": None} for row in rows]
        report["all_targets_met"] = None
        report["note"] = "CPU self-test with small sizes: the targets are for one H100"
    report["ok"] = all(check["ok"] for check in report["checks"].values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    day = datetime.date.today().isoformat()
    slug = (
        re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] if device.type == "cuda" else "cpu"
    )
    path = Path(settings.results) / f"{day}-{slug}.json"
    report["record"] = str(path)
    atomic.write_text(path, json.dumps(report, indent=2) + "\n")
    return report
