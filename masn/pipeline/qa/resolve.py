"""A task with every default decided once, for `masn train` and `masn evaluate` alike: where its
questions and features are, its rows split three ways, and how its batches are read."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from masn.datasets import get_dataset
from masn.datasets.annotations import QARow, infer_head
from masn.datasets.spec import Sampling, TaskSpec
from masn.datasets.splits import load_splits
from masn.pipeline.qa.loading import Loading
from masn.runtime import default_workers


@dataclass(frozen=True)
class ResolvedTask:
    """spec: the task, its head and question types decided. annotations / features: absolute
    paths. rows: train, val and test questions. loading: frames, sampling, batch size and
    workers."""

    spec: TaskSpec
    annotations: Path
    features: Path
    rows: dict[str, list[QARow]]
    loading: Loading


def default_features(spec: TaskSpec) -> Path:
    """Where `make extract` writes the task's feature store."""
    return Path(f"features/{spec.dataset}.h5")


def resolve_task(
    spec: TaskSpec,
    *,
    seed: int,
    val_fraction: float,
    annotations: Path | None = None,
    features: Path | None = None,
    frames: int | None = None,
    sampling: Sampling | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> ResolvedTask:
    """``spec`` with the given values, and the task's own defaults for those left None.

    A collection of your own (``spec.from_rows``) gets the head its training rows call for
    unless the spec has one (``task_spec(name, head)``, or a trained model's), and its question
    types from its rows unless the spec has them."""
    folder = task_annotations(spec, annotations)
    rows = load_splits(spec, folder, seed, val_fraction)
    if spec.from_rows:
        types = {row.qtype for split in rows.values() for row in split} - {""}
        head = spec.head or infer_head(rows["train"])
        spec = replace(spec, head=head, qtypes=spec.qtypes or tuple(sorted(types)))
    loading = task_loading(spec, frames, sampling, batch_size, workers)
    return ResolvedTask(spec, folder, task_features(spec, features), rows, loading)


def task_annotations(spec: TaskSpec, annotations: Path | None = None) -> Path:
    """The task's question folder, absolute: ``annotations``, else its dataset's."""
    return Path(annotations or get_dataset(spec.dataset).annotations).resolve()


def task_features(spec: TaskSpec, features: Path | None = None) -> Path:
    """The task's features, absolute: ``features``, else where `make extract` writes them."""
    return Path(features or default_features(spec)).resolve()


def task_loading(
    spec: TaskSpec,
    frames: int | None = None,
    sampling: Sampling | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
) -> Loading:
    """How the task's batches are read: the given values, the task's defaults for None."""
    return Loading(
        spec.frames if frames is None else frames,
        spec.sampling if sampling is None else sampling,
        spec.batch_size if batch_size is None else batch_size,
        default_workers() if workers is None else workers,
    )
