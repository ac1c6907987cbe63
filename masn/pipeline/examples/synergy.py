"""`masn synergy`: does MASN use the stream each question needs? A synthetic stream-specific task.

Every video has an object with a colour and a direction of movement, drawn independently. The
colour is planted only in the appearance features (global ResNet and detector region features),
the direction only in the motion features (global I3D and RoI motion features); to the other
label, each stream is pure noise. Box geometry is random and carries neither label: MASN feeds the
box encoding to *both* modules, so a label planted in the boxes would leak into the other
stream. Each video gets one question of each type ("what colour is the object?" and "which way
does the object move?"), so the video alone does not say what is asked; the question does.

Appearance-only, motion-only and full MASN are trained on the same data with the same settings.
Expected: each single-stream model answers its own stream's questions and stays at chance on the
other's; full MASN answers both. For full MASN the mean fusion weights alpha are reported per
question type on the test split: alpha weighs the appearance-centred attention (every row of
U = [H^a; H^m] attends to the appearance rows only), the motion-centred one (motion rows only)
and the all-mixed one. Colour questions should weigh the appearance-centred attention more than
direction questions do, and direction questions the motion-centred one (``alpha_lean``). Each
attention keeps U through its residual, so alpha is not strictly needed to route a stream; the
lean is learnt, not forced, and it depends on the settings (robust at lr 1e-3, not at 2e-3).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masn.datasets.splits import load_splits
from masn.errors import InvalidInput
from masn.pipeline.examples.planted import split_sizes, unit_directions, write_collection
from masn.pipeline.examples.settings import SynergySettings, SynergyShape
from masn.pipeline.qa.loading import Loading, evaluation_batches, loader
from masn.pipeline.qa.prepare import open_source
from masn.pipeline.qa.questions import QADataset
from masn.pipeline.training.checkpoint import load_predictor
from masn.pipeline.training.settings import TrainSettings
from masn.pipeline.training.trainer import train
from masn.settings import to_dict

log = logging.getLogger(__name__)

TYPES = ("appearance", "motion")
ANSWERS = {
    "appearance": ("red", "green", "blue", "yellow"),
    "motion": ("left", "right", "up", "down"),
}
QUESTIONS = {
    "appearance": ("what colour is the object?", "what is the colour of the object?"),
    "motion": ("which way does the object move?", "in which direction does the object move?"),
}
MODELS = {"appearance-only": "appearance", "motion-only": "motion", "full MASN": "both"}
SPLIT_SHARES = (0.6, 0.1)  # train, val; the rest is test
MIN_VIDEOS = 20


def write_synergy(
    folder: str | Path, shape: SynergyShape = SynergyShape(), seed: int = 0
) -> tuple[Path, Path]:
    """Writes ``folder/annotations/{train,val,test}.jsonl`` and ``folder/features.h5``; returns
    (annotations folder, store path). Two questions per video, one of each type."""
    if shape.videos < MIN_VIDEOS:
        raise InvalidInput(
            f"the synergy task needs at least {MIN_VIDEOS} videos, got {shape.videos}"
        )
    rng = np.random.default_rng(seed)
    classes = {t: len(ANSWERS[t]) for t in TYPES}
    patterns = {t: unit_directions(rng, classes[t], shape.dim) for t in TYPES}
    labels = {t: rng.integers(0, classes[t], shape.videos) for t in TYPES}
    signals = (
        tuple(shape.strength * np.sqrt(shape.dim) * patterns[t][labels[t][v]] for t in TYPES)
        for v in range(shape.videos)
    )

    def questions(key: str, index: int) -> list[dict[str, Any]]:
        return [
            {
                "video": key,
                "question": QUESTIONS[t][int(rng.integers(len(QUESTIONS[t])))],
                "answer": ANSWERS[t][labels[t][index]],
                "type": t,
            }
            for t in TYPES
        ]

    return write_collection(
        folder,
        signals,
        questions,
        frames=shape.frames,
        objects=shape.objects,
        noise=shape.noise,
        shares=SPLIT_SHARES,
        provenance={"synthetic": "synergy", "seed": seed},
        rng=rng,
    )


@torch.inference_mode()
def mean_alpha(
    checkpoint: Path, annotations: Path, store: Path, device: str = "cpu"
) -> dict[str, dict[str, float]]:
    """Mean fusion weight of each attention per question type on the test split (eval mode)."""
    predictor = load_predictor(checkpoint)
    model, spec = predictor.model.to(device), predictor.spec
    names = model.config.fusion_attentions
    if not names:
        raise InvalidInput(f"{checkpoint} has no fusion module, hence no alpha")
    rows = load_splits(spec, annotations, 0)["test"]
    source = open_source(spec, store)
    questions = predictor.questions(rows, source, "test")
    dataset = QADataset(questions, source, predictor.frames, predictor.sampling)
    loading = Loading(predictor.frames, predictor.sampling, 64, 0)
    batches = evaluation_batches(len(dataset), loading.batch_size)
    sums = torch.zeros(len(spec.qtypes), len(names), dtype=torch.float64)
    counts = torch.zeros(len(spec.qtypes), dtype=torch.float64)
    for batch in loader(dataset, batches, loading, torch.device(device)):
        batch = batch.to(torch.device(device))
        alpha = model(batch.video, batch.tokens, batch.lengths).alpha.double().cpu()
        sums.index_add_(0, batch.qtypes, alpha)
        counts.index_add_(0, batch.qtypes, torch.ones(len(batch), dtype=torch.float64))
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return {
        qtype: {name: round(float(means[i, j]), 4) for j, name in enumerate(names)}
        for i, qtype in enumerate(spec.qtypes)
        if counts[i] > 0
    }


def run_synergy(settings: SynergySettings = SynergySettings()) -> dict[str, Any]:
    """Writes the task, trains the three models and returns a JSON-ready result (also written
    to ``out/synergy.json``); without ``out`` everything lives in a temporary folder."""
    if settings.out is None:
        with tempfile.TemporaryDirectory(prefix="masn-synergy-") as folder:
            return _run(Path(folder), settings)
    out = Path(settings.out)
    if (out / "runs").exists():
        raise InvalidInput(f"{out} already holds a synergy run; pass another --out")
    result = _run(out, settings)
    (out / "synergy.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", out / "synergy.json")
    return result


def _run(folder: Path, settings: SynergySettings) -> dict[str, Any]:
    seed, shape = settings.seed, settings.shape
    started = time.perf_counter()
    annotations, store = write_synergy(folder / "data", shape, seed)
    models: dict[str, dict[str, Any]] = {}
    for name, streams in MODELS.items():
        run = folder / "runs" / streams
        log.info("synergy: training %s (streams=%s)", name, streams)
        report = train(
            TrainSettings(
                task="custom",
                annotations=str(annotations),
                features=str(store),
                out=str(run),
                glove="random",
                frames=shape.frames,
                hidden=settings.hidden,
                lr=settings.lr,
                batch_size=settings.batch_size,
                epochs=settings.epochs,
                patience=settings.epochs,
                seed=seed,
                streams=streams,
                workers=0,
                device=settings.device,
                log_every=10**6,
                baseline=False,
            )
        )
        per_type = report["test"]["per_type"]
        models[name] = {
            "streams": streams,
            **{t: per_type[t]["accuracy"] for t in TYPES},
            "overall": report["test"]["accuracy"],
            "selected_epoch": report["selected_epoch"],
        }
    alpha = mean_alpha(folder / "runs" / "both" / "best.pt", annotations, store, settings.device)
    result = {
        "seed": seed,
        "settings": to_dict(settings),
        "test_questions_per_type": split_sizes(shape.videos, SPLIT_SHARES)[2],
        "chance": {t: round(100 / len(ANSWERS[t]), 2) for t in TYPES},
        "accuracy": models,
        "alpha": alpha,
        "alpha_lean": alpha_lean(alpha),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("synergy:\n%s", format_table(result))
    return result


def alpha_lean(alpha: dict[str, dict[str, float]]) -> dict[str, float]:
    """How much each stream-centred attention gains on its own stream's questions.

    appearance: mean alpha of the appearance-centred attention on appearance questions minus
    that on motion questions; motion: the motion-centred attention's, motion minus appearance
    questions. Both positive means alpha leans to the right stream per question type.
    """
    return {
        "appearance": round(alpha["appearance"]["appearance"] - alpha["motion"]["appearance"], 4),
        "motion": round(alpha["motion"]["motion"] - alpha["appearance"]["motion"], 4),
    }


def format_table(result: dict[str, Any]) -> str:
    """Test accuracy per question type for the three models, then full MASN's mean alpha."""
    chance = result["chance"]
    lines = [
        f"{'model':<16}{'appearance Qs':>15}{'motion Qs':>12}",
        *(
            f"{name:<16}{row['appearance']:>14.1f}%{row['motion']:>11.1f}%"
            for name, row in result["accuracy"].items()
        ),
        f"{'chance':<16}{chance['appearance']:>14.1f}%{chance['motion']:>11.1f}%",
        "",
        "full MASN mean alpha (test):",
        f"{'question type':<16}{'appearance':>12}{'motion':>10}{'all':>8}",
    ]
    for qtype, weights in result["alpha"].items():
        cells = "".join(
            f"{weights.get(k, float('nan')):>{w}.3f}"
            for k, w in (("appearance", 12), ("motion", 10), ("all", 8))
        )
        lines.append(f"{qtype:<16}{cells}")
    lean = result["alpha_lean"]
    lines.append(
        f"{'lean':<16}{lean['appearance']:>+12.3f}{lean['motion']:>+10.3f}"
        "   (own-type minus other-type questions)"
    )
    return "\n".join(lines)
