"""`masn demo`: the whole pipeline on the bundled sample, in minutes, on any machine.

Rendered clips and a real video in (``demo_sample.py``), features out (`masn extract`), MASN
trained on each question kind (open-ended, count, multiple choice), evaluated on held-out clips
next to a baseline without the video, one held-out question answered with its attention figure,
and the real video's detector boxes drawn. With the published weights installed (`masn weights
fetch`) the networks are the paper's; otherwise they are random and the demo says so loudly.
Random networks still tell the clips' colours, shapes and motions apart, a little: MASN learns
from such features with per-dimension standardisation (``--standardize`` of `masn train`),
which the demo always uses. On a CPU the networks read small frames and the detector classifies
few proposals, so that the demo stays within minutes; everything else is the real code path.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from masn.extract.networks.feature_networks import announce_random_weights
from masn.extract.run.collection import run_extraction
from masn.extract.settings import DetectorConfig, ExtractionConfig, ExtractSettings, RunOptions
from masn.extract.show import sampled_frames, show_figure
from masn.extract.store.reader import FeatureStore
from masn.pipeline.answering.answer import answer_video
from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.examples.demo_sample import (
    CLIPS,
    KINDS,
    REAL_KEY,
    prepare_videos,
    questions_dir,
    write_questions,
)
from masn.pipeline.examples.settings import DemoSettings
from masn.pipeline.training.evaluate import run_evaluate
from masn.pipeline.training.settings import GLOVE_FILE, EvaluateSettings, TrainSettings
from masn.pipeline.training.trainer import train
from masn.roles import ROLES
from masn.runtime import resolve_device
from masn.weights.cache import cache_dir
from masn.weights.installed import find_installed

log = logging.getLogger(__name__)

# On a CPU: whole frames at 112 pixels for ResNet-152 and I3D (the paper: 224), and a detector
# that pools 7 x 7 regions (14 x 14). Random networks: one proposal of a 64-pixel frame and one
# box (their boxes mean nothing, and ten copies of one box tell MASN no more than one);
# published weights: 10 proposals of a 192-pixel frame (the paper: 300 of 600) and 10 boxes.
CPU_FRAME_SIZE = 112
CPU_DETECTOR = {
    "random": DetectorConfig(min_size=64, max_size=107, post_nms_top_n=1, pool_size=7, boxes=1),
    "published": DetectorConfig(min_size=192, max_size=320, post_nms_top_n=10, pool_size=7),
}
QUICK_CLIPS = tuple(spec for index, spec in enumerate(CLIPS) if index % 13 in (0, 1, 3))
"""The clips of a quick demo: 33 of the 136 (21 training, 12 held out), every colour, shape and
motion among them."""
BASELINES = {
    "open_ended": "majority_baseline",
    "count": "mean_baseline",
    "multiple_choice": "answer_only_baseline",
}
TITLES = {"open_ended": "open-ended", "count": "count", "multiple_choice": "multiple choice"}


def _extraction(settings: DemoSettings, device: torch.device, real: bool) -> ExtractionConfig:
    if settings.quick:  # one sampled frame per 2 s, tiny networks: a second per video
        detector = DetectorConfig(min_size=48, max_size=80, post_nms_top_n=1, pool_size=7, boxes=1)
        return ExtractionConfig(sample_every=12, frame_size=64, detector=detector)
    if device.type == "cpu":
        detector = CPU_DETECTOR["published" if real else "random"]
        return ExtractionConfig(frame_size=CPU_FRAME_SIZE, detector=detector)
    return ExtractionConfig(precision="bf16")


def weights_installed(folder: Path) -> bool:
    """Whether `masn weights fetch` has installed the paper's three networks in ``folder``."""
    paper = ExtractionConfig()
    return all(find_installed(folder, role, paper.backbone(role)) for role in ROLES)


def _banner(weights: Path) -> None:
    announce_random_weights(
        f"no published weights in {weights}, so the demo runs with random networks",
        "The pipeline is real, and MASN still learns the clips' questions from random features; "
        "on real videos the answers mean nothing.",
    )


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Runs every stage (each skips what an earlier demo run already finished)."""
    settings = settings.resolved()
    out = settings.out
    device = resolve_device(settings.device)
    weights = cache_dir()
    real = weights_installed(weights)
    if not real:
        _banner(weights)
    glove = weights / GLOVE_FILE
    if not glove.is_file():
        log.warning("no %s: random word vectors (`masn weights fetch` gets GloVe)", glove)

    log.info("[1/6] rendering the sample clips into %s", out / "videos")
    clips = QUICK_CLIPS if settings.quick else CLIPS
    videos = prepare_videos(out / "videos", clips)
    store = out / "features.h5"
    extraction = _extraction(settings, device, real)
    extract = ExtractSettings(
        out=store,
        videos=videos,
        weights=weights if real else None,
        random_weights=not real,
        features=extraction,
        run=RunOptions(str(device), batch_size=8, workers=0 if settings.quick else 1),
    )
    log.info("[2/6] extracting features of %s into %s", videos, store)
    if run_extraction(extract) != 0:
        raise RuntimeError(f"feature extraction stored no video; see {store}.failures.jsonl")
    words = str(glove) if glove.is_file() else "random"
    summary: dict[str, Any] = {
        "random_weights": not real,
        "word_vectors": words,
        "device": str(device),
        "videos": str(videos),
        "features": str(store),
        "runs": {},
    }
    base = training_settings(settings, store, words, device)
    if settings.quick:  # the questions about the quick clips
        write_questions(out / "questions", clips)
    for number, kind in enumerate(KINDS, start=3):
        run = out / "runs" / kind
        log.info("[%d/6] training and evaluating MASN on %s questions -> %s", number, kind, run)
        questions = out / "questions" / kind if settings.quick else questions_dir(kind)
        summary["runs"][kind] = train_and_evaluate(base, kind, run, device, questions)

    question = _held_out_question(Path(summary["runs"]["open_ended"]["predictions"]))
    video, text = question["video"], question["question"]
    log.info("[6/6] answering %r about the held-out clip %s", text, video)
    answer = answer_video(
        AnswerSettings(
            video=videos / video,
            question=text,
            checkpoint=out / "runs" / "open_ended" / "best.pt",
            out=out / "answer.png",
            weights=weights if real else None,
            random_weights=not real,
            device=str(device),
            features=extraction,
        )
    )
    summary["answer"] = {**answer, "expected": question["answer"]}
    summary["real_video"] = str(_draw_real_video(store, out / "bigbuckbunny.png", real))
    return summary


def training_settings(
    settings: DemoSettings, store: Path, glove: str, device: torch.device | str
) -> TrainSettings:
    """`masn train` settings of every question kind (``glove``: a GloVe file or "random"):
    standardised features, every epoch run, the best on the validation videos kept."""
    settings = settings.resolved()
    return TrainSettings(
        task="custom",
        features=store,
        glove=glove,
        frames=settings.frames,
        hidden=settings.hidden,
        dropout=settings.dropout,
        standardize=True,
        lr=settings.lr,
        epochs=settings.epochs,
        patience=settings.epochs,
        batch_size=settings.batch_size,
        workers=0,
        device=str(device),
        log_every=100,
        seed=settings.seed,
    )


def train_and_evaluate(
    base: TrainSettings,
    kind: str,
    run: Path,
    device: torch.device | str,
    questions: Path | None = None,
) -> dict[str, Any]:
    """Trains one question kind (resuming a finished or interrupted run) on ``questions`` (by
    default the shipped ones of ``kind``) and evaluates it on the held-out clips; returns
    MASN's test figures, the baseline's and where they went."""
    config = replace(
        base,
        annotations=questions_dir(kind) if questions is None else questions,
        out=run,
        resume=(run / "last.pt").exists(),  # a second demo run reuses the first's training
    )
    report = train(config)
    evaluated = run_evaluate(
        EvaluateSettings(
            checkpoint=run / "best.pt", out=run / "evaluate-test", device=str(device), workers=0
        )
    )
    return {
        "run": str(run),
        "test": evaluated["masn"],
        "baseline": evaluated[BASELINES[kind]],
        "selected_epoch": report["selected_epoch"],
        "report": str(run / "report.json"),
        "metrics": str(run / "evaluate-test" / "metrics.json"),
        "predictions": str(run / "evaluate-test" / "predictions.jsonl"),
    }


def _held_out_question(predictions: Path) -> dict[str, Any]:
    """The held-out open-ended question the model answered right with the highest score
    (the first question if it got none right)."""
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    right = [line for line in lines if line["correct"]]
    if not right:
        log.warning("MASN answered no held-out open-ended question right")
        return lines[0]
    return max(right, key=lambda line: line["top"][0][1])


def _draw_real_video(store: Path, out: Path, real: bool) -> Path:
    """The real video's sampled frames with the detector's boxes, labels and attributes."""
    with FeatureStore(store) as features:
        record = features.read(REAL_KEY)
        fps = features.provenance.config.get("fps", 6.0)
    figure = show_figure(record, sampled_frames(record, fps))
    networks = "the published detector" if real else "a RANDOM detector (boxes mean nothing)"
    figure.suptitle(f"Big Buck Bunny, a real video: boxes and labels of {networks}")
    figure.savefig(out, dpi=110)
    return out


def _figure(kind: str, result: dict[str, Any] | None) -> str:
    if result is None or result.get("questions", 0) == 0:
        return "-"
    if kind == "count":
        return f"MSE {result['mse']:.2f}"
    return f"{result['accuracy']:.1f} %"


def results_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Held-out results per question kind next to the baseline without the video and chance."""
    rows = [("kind", "test questions", "MASN", "baseline without the video", "chance")]
    for kind, run in runs.items():
        test, baseline = run["test"], run["baseline"]
        if kind == "open_ended":
            without = f"{_figure(kind, baseline)} (always {baseline['answer']!r})"
            chance = f"{baseline['chance']:.1f} %"
        elif kind == "count":
            without = f"{_figure(kind, baseline)} (always {baseline['mean']:.2f})"
            chance = f"MSE {baseline['chance_mse']:.2f}"
        else:
            without = f"{_figure(kind, baseline)} (answer only)"
            chance = f"{baseline['chance']:.1f} %"
        rows.append((TITLES[kind], str(test["questions"]), _figure(kind, test), without, chance))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def outline(summary: dict[str, Any]) -> str:
    """A plain-text account of the results and where every output went."""
    lines = ["", "MASN demo finished" + (" (RANDOM WEIGHTS)" if summary["random_weights"] else "")]
    lines.append(f"  videos      {summary['videos']}")
    lines.append(f"  features    {summary['features']}")
    for kind, run in summary["runs"].items():
        lines.append(f"  {TITLES[kind]:<11} {run['run']} (metrics, predictions: evaluate-test/)")
    lines += ["", "Held-out clips (never seen in training):", *results_table(summary["runs"])]
    answer = summary["answer"]
    verdict = "right" if answer["answer"] == answer["expected"] else "wrong"
    lines += [
        "",
        f"  {answer['video']}",
        f"  {answer['question']!r} -> {answer['answer']!r} ({verdict})",
        f"  attention figure  {answer['figure']}",
        f"  real video        {summary['real_video']} (its detector boxes)",
        "",
        "Browse the features, ask the models and compare the runs in a web browser "
        "(pip install 'masn[serve]'):",
        f"  {serve_command(summary)}",
    ]
    return "\n".join(lines)


def serve_command(summary: dict[str, Any]) -> str:
    """The `masn serve` command that serves this demo's store and runs."""
    runs = " ".join(shlex.quote(run["run"]) for run in summary["runs"].values())
    return f"masn serve --store {shlex.quote(summary['features'])} --run {runs}"
