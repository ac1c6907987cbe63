"""A task's questions split into train, val and test.

Datasets without a validation file (TGIF-QA, and collections without ``val.jsonl``) hold out a
seeded share of the training *videos*: all questions of a video fall on one side (the official
code split questions at random, which lets validation videos leak into training).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from masn.datasets import get_dataset
from masn.datasets.annotations import QARow
from masn.datasets.spec import SPLITS, TaskSpec
from masn.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)


def split_files(spec: TaskSpec, folder: str | Path) -> dict[str, Path]:
    """The question file of each split ``folder`` holds for ``spec``."""
    return get_dataset(spec.dataset).split_files(spec, Path(folder))


def read_split(spec: TaskSpec, path: Path) -> list[QARow]:
    """The rows of one question file of ``spec``'s dataset."""
    if not path.is_file():
        raise MissingInput(
            f"no {spec.name} question file {path}; pass --annotations DIR holding {path.name}"
        )
    return get_dataset(spec.dataset).read(spec, path)


def load_splits(
    spec: TaskSpec, folder: str | Path, seed: int, val_fraction: float = 0.1
) -> dict[str, list[QARow]]:
    """train / val / test rows; without a validation file, a seeded share of training videos."""
    splits = {split: read_split(spec, path) for split, path in split_files(spec, folder).items()}
    if "val" not in splits:
        splits["train"], splits["val"] = split_by_video(splits["train"], val_fraction, seed)
    for split in SPLITS:
        log.info("%s %s: %d questions", spec.name, split, len(splits[split]))
    return {split: splits[split] for split in SPLITS}


def split_by_video(
    rows: list[QARow], fraction: float, seed: int
) -> tuple[list[QARow], list[QARow]]:
    """(kept, held out): a seeded ``fraction`` of the videos, with all their questions."""
    if not 0 < fraction < 1:
        raise InvalidInput(f"the validation fraction must lie in (0, 1), got {fraction}")
    videos = sorted({row.keys[0] for row in rows})
    if len(videos) < 2:
        raise InvalidInput("need questions on at least 2 videos to split off a validation set")
    count = min(len(videos) - 1, max(1, round(fraction * len(videos))))
    order = np.random.default_rng(seed).permutation(len(videos))
    held = {videos[i] for i in order[:count]}
    kept = [row for row in rows if row.keys[0] not in held]
    return kept, [row for row in rows if row.keys[0] in held]
