"""`masn demo`: the whole pipeline on the bundled sample, in minutes, on any machine.

Real videos and rendered clips in (pipeline/sample.py), features out (`masn extract`), MASN
trained on each question kind (open-ended, count, multiple choice), evaluated, and one question
about Big Buck Bunny answered with its attention figure. With the published weights installed
(`make weights`) the networks are the paper's; otherwise they are random and the demo says so
loudly. On a CPU the detector runs at a reduced input size so that the demo stays within a few
minutes; everything else is the real code path with the real defaults of each stage.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from masn.extract.networks.feature_networks import RANDOM_WEIGHTS_WARNING
from masn.extract.run.collection import run_extraction
from masn.extract.settings import DetectorConfig, ExtractionConfig, ExtractSettings, RunOptions
from masn.pipeline.answering.answer import answer_video
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.examples.demo_sample import (
    DEMO_QUESTION,
    DEMO_VIDEO,
    KINDS,
    prepare_videos,
    questions_dir,
)
from masn.pipeline.examples.settings import DemoSettings
from masn.pipeline.training.evaluate import run_evaluate
from masn.pipeline.training.settings import GLOVE_FILE, EvaluateSettings, TrainSettings
from masn.pipeline.training.trainer import train
from masn.runtime import resolve_device
from masn.weights.cache import cache_dir
from masn.weights.installed import ROLE_FILES

log = logging.getLogger(__name__)

# Detector input on a CPU: short side / long-side cap / proposals (the paper: 600 / 1000 / 300).
CPU_DETECTOR = DetectorConfig(min_size=192, max_size=320, post_nms_top_n=36)


def _extraction(settings: DemoSettings, device: torch.device) -> ExtractionConfig:
    if settings.quick:  # one sampled frame per 2 s, tiny detector: seconds per video
        detector = DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12)
        return ExtractionConfig(sample_every=12, frame_size=112, detector=detector)
    if device.type == "cpu":
        return ExtractionConfig(detector=CPU_DETECTOR)
    return ExtractionConfig(precision="bf16")


def weights_installed(folder: Path) -> bool:
    """Whether `make weights` has installed all three converted networks in ``folder``."""
    return all((folder / name).is_file() for name in ROLE_FILES.values())


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Runs every stage (each skips what an earlier demo run already finished)."""
    out = settings.out
    device = resolve_device(settings.device)
    weights = cache_dir()
    real = weights_installed(weights)
    if not real:
        log.warning(
            "%s\n#  No published weights in %s: the demo runs with RANDOM networks.  The\n"
            "#  pipeline is real, the answers are meaningless. `make weights` fixes that.",
            RANDOM_WEIGHTS_WARNING,
            weights,
        )
    glove = weights / GLOVE_FILE
    if not glove.is_file():
        log.warning("no %s: random word vectors (run `make weights` for GloVe)", glove)

    videos = prepare_videos(out / "videos")
    store = out / "features.h5"
    extraction = _extraction(settings, device)
    extract = ExtractSettings(
        out=store,
        videos=videos,
        weights=weights if real else None,
        random_weights=not real,
        features=extraction,
        run=RunOptions(str(device), batch_size=8, workers=0 if settings.quick else 1),
    )
    log.info("[1/5] extracting features of %s into %s", videos, store)
    if run_extraction(extract) != 0:
        raise RuntimeError(f"feature extraction stored no video; see {store}.failures.jsonl")

    summary: dict[str, Any] = {
        "random_weights": not real,
        "word_vectors": str(glove) if glove.is_file() else "random",
        "device": str(device),
        "videos": str(videos),
        "features": str(store),
        "runs": {},
    }
    base = TrainSettings(
        task="custom",
        features=str(store),
        glove=str(glove) if glove.is_file() else "random",
        hidden=64 if settings.quick else settings.hidden,
        lr=settings.lr,
        epochs=settings.epochs,
        patience=settings.epochs,
        batch_size=settings.batch_size,
        workers=0,
        device=str(device),
        log_every=10,
        seed=settings.seed,
    )
    for number, kind in enumerate(KINDS, start=2):
        run = out / "runs" / kind
        log.info("[%d/5] training and evaluating MASN on %s questions -> %s", number, kind, run)
        config = replace(
            base,
            annotations=str(questions_dir(kind)),
            out=str(run),
            resume=(run / "last.pt").exists(),  # a second demo run reuses the first's training
        )
        report = train(config)
        evaluated = run_evaluate(
            EvaluateSettings(
                checkpoint=run / "best.pt", out=run / "evaluate-test", device=str(device), workers=0
            )
        )
        summary["runs"][kind] = {
            "run": str(run),
            "test": evaluated["masn"],
            "answer_only_baseline": evaluated.get("answer_only_baseline"),
            "selected_epoch": report["selected_epoch"],
            "report": str(run / "report.json"),
            "metrics": str(run / "evaluate-test" / "metrics.json"),
            "predictions": str(run / "evaluate-test" / "predictions.jsonl"),
        }

    log.info("[5/5] answering %r about %s", DEMO_QUESTION, DEMO_VIDEO)
    summary["answer"] = answer_video(
        AnswerSettings(
            video=videos / DEMO_VIDEO,
            question=DEMO_QUESTION,
            checkpoint=out / "runs" / "open_ended" / "best.pt",
            out=out / "answer.png",
            weights=weights if real else None,
            random_weights=not real,
            device=str(device),
            features=extraction,
        )
    )
    return summary


def outline(summary: dict[str, Any]) -> str:
    """A short plain-text account of what ran and where every output went."""
    lines = ["", "MASN demo finished" + (" (RANDOM WEIGHTS)" if summary["random_weights"] else "")]
    lines.append(f"  videos     {summary['videos']}")
    lines.append(f"  features   {summary['features']}")
    for kind, run in summary["runs"].items():
        test = run["test"]
        figure = f"MSE {test['mse']}" if "mse" in test else f"accuracy {test['accuracy']} %"
        baseline = run.get("answer_only_baseline")
        extra = f" (answer-only baseline {baseline['accuracy']} %)" if baseline else ""
        lines.append(f"  {kind:<16} test {figure}{extra}; run {run['run']}")
    answer = summary["answer"]
    lines.append(f"  answer     {answer['question']!r} -> {answer['answer']!r}")
    lines.append(f"  figure     {answer['figure']}")
    return "\n".join(lines)
