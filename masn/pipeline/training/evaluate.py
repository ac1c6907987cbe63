"""Evaluation: a model over a split, metrics per question type, per-question predictions.

``masn evaluate`` reads a checkpoint, rebuilds the task's splits with the checkpoint's
vocabulary and answer classes, and writes ``metrics.json`` and ``predictions.jsonl``. Next to
MASN it reports a baseline without the video (``baseline.py``): the majority answer
(open-ended), the mean count (count), or the answer-only model (multiple choice), because
TGIF-QA's candidates alone give much of the answer away.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from masn import progress
from masn.atomic import writable_folder, write_text
from masn.datasets.spec import TaskSpec
from masn.model import MASN
from masn.pipeline.qa.loading import Loading, evaluation_batches, loader
from masn.pipeline.qa.prepare import open_source
from masn.pipeline.qa.questions import QADataset, Questions
from masn.pipeline.qa.resolve import resolve_task, task_annotations, task_features, task_loading
from masn.pipeline.qa.text import tokeniser
from masn.pipeline.training.baseline import answer_only_baseline, majority_baseline, mean_baseline
from masn.pipeline.training.checkpoint import Predictor, checkpoint_file, load_predictor
from masn.pipeline.training.distributed import Process
from masn.pipeline.training.metrics import Tally, beside_paper
from masn.pipeline.training.settings import EvaluateSettings, train_defaults
from masn.runtime import autocast, resolve_device
from masn.settings import write as write_settings

log = logging.getLogger(__name__)

TOP = 5  # answers kept per question (predictions.jsonl, masn answer)
SINGLE = Process()  # a run without torchrun


@torch.inference_mode()
def evaluate_split(
    model: MASN,
    questions: Questions,
    source: Any,
    spec: TaskSpec,
    loading: Loading,
    device: torch.device,
    precision: str = "fp32",
    process: Process = SINGLE,
    keep: bool = False,
    label: str = "evaluate",
) -> tuple[Tally, dict[int, dict[str, Any]]]:
    """Metrics over ``questions`` (summed over all processes) and, with ``keep``, each question's
    prediction with its top scores (this process's share only)."""
    was_training = model.training
    model.eval()
    tally = Tally(spec.head == "count", spec.qtypes, spec.type_groups)
    kept: dict[int, dict[str, Any]] = {}
    dataset = QADataset(questions, source, loading.frames, loading.sampling)
    batches = evaluation_batches(len(dataset), loading.batch_size, process.rank, process.world)
    for batch in progress.bar(
        loader(dataset, batches, loading, device),
        total=len(batches),
        desc=label,
        disable=not process.main,
        leave=False,
    ):
        batch = batch.to(device)
        with autocast(device, precision):
            output = model(batch.video, batch.tokens, batch.lengths).output.float()
        predictions = model.predict(output)
        tally.add(predictions, batch.targets, batch.qtypes)
        if keep:
            kept.update(_predictions(spec, output.cpu(), predictions.cpu(), batch.index))
    tally.all_reduce()
    model.train(was_training)
    return tally, kept


def top_answers(output: torch.Tensor, head: str, k: int = TOP) -> list[tuple[int, float]]:
    """The ``k`` best answers of one question's output, best first, as (index, score).

    Open-ended scores are the softmax over the answer classes; multiple-choice scores are the
    raw candidate scores (the hinge loss trains a margin, not probabilities).
    """
    scores = output.softmax(-1) if head == "open_ended" else output
    best = scores.topk(min(k, len(scores)))
    return [(int(i), float(s)) for s, i in zip(best.values, best.indices, strict=True)]


def _predictions(
    spec: TaskSpec, output: torch.Tensor, predictions: torch.Tensor, index: torch.Tensor
) -> dict[int, dict[str, Any]]:
    found = {}
    for row, out, prediction in zip(index.tolist(), output, predictions.tolist(), strict=True):
        entry: dict[str, Any] = {"prediction": prediction}
        if spec.head == "count":
            entry["output"] = round(float(out), 4)
        else:
            entry["top"] = [[i, round(s, 4)] for i, s in top_answers(out, spec.head)]
        found[row] = entry
    return found


def prediction_lines(
    predictor: Predictor, questions: Questions, kept: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One JSON-ready line per question: source, question, answer, prediction, correct."""
    answers = predictor.answers
    lines = []
    for i, row in enumerate(questions.rows):
        entry = kept[i]
        target = questions.targets[i]
        if predictor.spec.head == "count":
            correct = entry["prediction"] == round(float(target))
        else:
            correct = entry["prediction"] == int(target)
        line = {
            "source": row.source,
            "video": questions.keys[i],
            "question": row.question,
            "answer": row.answer,
            "type": row.qtype,
            "correct": bool(correct),
            **entry,
        }
        if answers is not None:
            line["prediction"] = answers.answers[entry["prediction"]]
            line["top"] = [[answers.answers[c], s] for c, s in entry["top"]]
        lines.append(line)
    return lines


def run_evaluate(settings: EvaluateSettings) -> dict[str, Any]:
    """``masn evaluate``: metrics of a checkpoint on a split, written beside it (or to ``out``)
    with the settings that made them (``config.yaml``)."""
    checkpoint, split = checkpoint_file(settings.checkpoint).resolve(), settings.split
    device = resolve_device(settings.device)
    predictor = load_predictor(checkpoint)
    decided = resolved_settings(settings, predictor)
    folder, seed = Path(decided.out), decided.seed
    where = "masn evaluate cannot write its results"
    writable_folder(folder, where, "choose a writable --out")
    trained = training_settings(predictor)
    task = resolve_task(
        predictor.spec,
        seed=seed,
        val_fraction=trained["val_fraction"],
        annotations=decided.annotations,
        features=decided.features,
        frames=predictor.frames,
        sampling=predictor.sampling,
        batch_size=decided.batch_size,
        workers=decided.workers,
    )
    spec, rows, loading = task.spec, task.rows, task.loading
    annotations, features = task.annotations, task.features
    source = open_source(spec, features)
    policy = trained["out_of_set"]
    questions = predictor.questions(rows[split], source, split, policy)
    model = predictor.model.to(device)
    precision = decided.precision
    tally, kept = evaluate_split(
        model, questions, source, spec, loading, device, precision, keep=True, label=split
    )
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "task": spec.name,
        "split": split,
        "annotations": str(annotations),
        "features": str(features),
        "masn": tally.summary(),
        "damaged_videos": len(questions.damaged),  # left out, named in the log
        "settings": metric_settings(spec, policy),
    }
    paper = beside_paper(spec, report["masn"]) if split == "test" else None
    if paper is not None:
        report["paper"] = paper
        log.info(
            "test %s: %s measured, %s in the paper (%s)",
            paper["metric"],
            paper["measured"],
            paper["paper"],
            paper["source"],
        )
    if settings.baseline and spec.head == "multiple_choice":
        tokenise = tokeniser(predictor.tokenizer)
        report["answer_only_baseline"] = answer_only_baseline(
            model, rows["train"], questions, predictor.vocabulary, tokenise, seed
        )
    elif settings.baseline and spec.head == "count":
        report["mean_baseline"] = mean_baseline(rows["train"], questions)
    elif settings.baseline and predictor.answers is not None:
        classes = len(predictor.answers)
        report["majority_baseline"] = majority_baseline(rows["train"], questions, classes)
    write_settings(decided, folder / "config.yaml")
    write_text(folder / "metrics.json", json.dumps(report, indent=2) + "\n")
    lines = prediction_lines(predictor, questions, kept)
    write_text(folder / "predictions.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    log.info("wrote %s and %s", folder / "metrics.json", folder / "predictions.jsonl")
    return report


def training_settings(predictor: Predictor) -> dict[str, Any]:
    """The settings of the run that trained ``predictor``; a checkpoint from elsewhere (e.g.
    imported) gets masn train's defaults."""
    return {**train_defaults(), **predictor.info.get("train_config", {})}


def resolved_settings(
    settings: EvaluateSettings, predictor: Predictor | None = None
) -> EvaluateSettings:
    """``settings`` with every default decided as ``masn evaluate`` decides it (``--print-config``
    shows it): the checkpoint file, the training run's questions, features and seed, the output
    folder beside the checkpoint, the task's batch size, the workers and fp32. ``predictor``:
    the checkpoint's model, when loaded already."""
    checkpoint = checkpoint_file(settings.checkpoint).resolve()
    predictor = load_predictor(checkpoint) if predictor is None else predictor
    trained, spec = training_settings(predictor), predictor.spec
    loading = task_loading(
        spec, predictor.frames, predictor.sampling, settings.batch_size, settings.workers
    )
    out = (
        settings.out
        if settings.out is not None
        else checkpoint.parent / f"evaluate-{settings.split}"
    )
    return replace(
        settings,
        checkpoint=checkpoint,
        annotations=task_annotations(spec, settings.annotations or trained["annotations"]),
        features=task_features(spec, settings.features or trained["features"]),
        out=Path(out),
        batch_size=loading.batch_size,
        workers=loading.workers,
        precision=settings.precision or "fp32",
        seed=int(trained["seed"]) if settings.seed is None else settings.seed,
    )


def metric_settings(spec: TaskSpec, policy: str) -> dict[str, str]:
    """How the numbers were computed, stated next to them."""
    if spec.head == "count":
        return {
            "metric": "MSE of clamp(round(output), 1, 10) against max(answer, 1) (paper: TGIF-QA's "
            "0 means 1); accuracy = exact matches"
        }
    settings = {"metric": "accuracy in % of questions"}
    if spec.head == "open_ended":
        settings["out_of_set"] = (
            "answers outside the answer classes count as wrong"
            if policy == "wrong"
            else "answers outside the classes are class 1, as in the official code"
        )
    return settings
