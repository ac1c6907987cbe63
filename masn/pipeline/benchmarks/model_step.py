"""Training-step benchmark of the MASN network: samples/s and peak memory per head type.

The official implementation, measured on one H100, trains at 477 (FrameQA, batch 32), 486
(Count, 32) and 54 (Action, 16, its five sequential passes) samples/s. The cases below use the
same TGIF-QA shapes; on a CPU they shrink (``size="small"``) so that a run takes a minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from masn.model import MASN, MASNConfig, VideoFeatures
from masn.pipeline.benchmarks.settings import (
    OFFICIAL_H100_SAMPLES_PER_S,
    PAPER_CASES,
    SHAPES,
    TARGET_H100_SAMPLES_PER_S,
    BenchCase,
    ModelBenchSettings,
    Size,
)
from masn.pipeline.training.trainer import adam
from masn.runtime import (
    Precision,
    autocast,
    default_precision,
    device_name,
    peak_memory_mb,
    resolve_device,
    synchronize,
)

log = logging.getLogger(__name__)


def synthetic_batch(
    case: BenchCase, shape: dict[str, int], device: torch.device, generator: torch.Generator
) -> tuple[VideoFeatures, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random features and questions with realistic padding (varied video and question lengths)."""
    b, t, n, d = case.batch, shape["frames"], shape["objects"], shape["features"]

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=generator)

    corners = torch.rand(b, t, n, 4, generator=generator).sort(dim=-1).values
    boxes = torch.cat([corners, corners[..., 2:] - corners[..., :2]], dim=-1)
    video = VideoFeatures(
        appearance=randn(b, t, d).relu(),
        motion=randn(b, t, d).relu(),
        appearance_objects=randn(b, t, n, d).relu(),
        motion_objects=randn(b, t, n, d).relu(),
        boxes=boxes,
        lengths=torch.randint(max(1, t // 2), t + 1, (b,), generator=generator),
    )
    question_shape = (b, case.candidates) if case.task == "multiple_choice" else (b,)
    words = shape["words"]
    tokens = torch.randint(2, shape["vocab"], (*question_shape, words), generator=generator)
    lengths = torch.randint(3, words + 1, question_shape, generator=generator)
    tokens = tokens * (torch.arange(words) < lengths.unsqueeze(-1))
    if case.task == "count":
        target = torch.randint(1, 11, (b,), generator=generator).float()
    else:
        high = case.candidates if case.task == "multiple_choice" else case.answers
        target = torch.randint(0, high, (b,), generator=generator)
    return video.to(device), tokens.to(device), lengths, target.to(device)


def bench_case(
    case: BenchCase,
    size: Size,
    device: torch.device,
    precision: Precision,
    steps: int,
    warmup: int,
    mode: str = "fixed",
) -> dict[str, Any]:
    """Times ``steps`` full training steps (forward, loss, backward, Adam) after ``warmup``."""
    shape = SHAPES[size]
    generator = torch.Generator().manual_seed(0)
    config = MASNConfig(
        vocab_size=shape["vocab"],
        task=case.task,
        num_answers=max(case.answers, 2),
        mode=mode,
        appearance_dim=shape["features"],
        motion_dim=shape["features"],
    )
    torch.manual_seed(0)
    model = MASN(config).to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(trainable, lr=1e-4)
    video, tokens, lengths, target = synthetic_batch(case, shape, device, generator)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            output = model(video, tokens, lengths).output
        loss = model.loss(output.float(), target)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak, memory_kind = peak_memory_mb(device)
    result = {
        "task": case.name,
        "batch": case.batch,
        "candidates": case.candidates,
        "steps": steps,
        "samples_per_s": round(case.batch * steps / elapsed, 1),
        "step_ms": round(1000 * elapsed / steps, 2),
        "peak_memory_mb": round(peak, 1),
        "memory_kind": memory_kind,
        "final_loss": round(float(loss.detach()), 4),
    }
    if precision == "bf16":
        result["bf16_max_rel_output_diff"] = _bf16_deviation(model, video, tokens, lengths, device)
    return result


def _bf16_deviation(model: MASN, video, tokens, lengths, device: torch.device) -> float:
    """Largest |bf16 - fp32| of the outputs, relative to the largest fp32 output (eval mode)."""
    model.eval()
    with torch.no_grad():
        exact = model(video, tokens, lengths).output.float()
        with autocast(device, "bf16"):
            fast = model(video, tokens, lengths).output.float()
    model.train()
    return round(float((fast - exact).abs().max() / exact.abs().max()), 5)


def run_model_bench(settings: ModelBenchSettings) -> dict[str, Any]:
    """Runs the paper's training cases asked for; returns a JSON-ready report."""
    target = resolve_device(settings.device)
    mode, steps, warmup = settings.mode, settings.steps, settings.warmup
    size = settings.size or ("tgif" if target.type == "cuda" else "small")
    precision = settings.precision or default_precision(target)
    name = device_name(target)
    report: dict[str, Any] = {
        "benchmark": "model_training_step",
        "device": name,
        "torch": torch.__version__,
        "size": size,
        "shapes": SHAPES[size],
        "precision": precision,
        "mode": mode,
        "official_h100_samples_per_s": OFFICIAL_H100_SAMPLES_PER_S,
        "target_h100_samples_per_s": TARGET_H100_SAMPLES_PER_S,
        "results": [],
    }
    for case in PAPER_CASES:
        if case.name not in settings.cases:
            continue
        log.info("benchmarking %s (batch %d) on %s", case.name, case.batch, name)
        report["results"].append(bench_case(case, size, target, precision, steps, warmup, mode))
    return report
