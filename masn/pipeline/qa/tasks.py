"""The six benchmark tasks and user collections: files, head, frames, batch size, answer set.

Splits: TGIF-QA ships train and test files only, so validation is a seeded 10 % of the training
*videos* (all questions of a video fall on one side; the official code split questions at
random, which lets validation videos leak into training). MSVD-QA and MSRVTT-QA have their own
validation files. A custom collection is ``train.jsonl``, ``test.jsonl`` and optionally
``val.jsonl`` (otherwise validation is split off like TGIF's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from masn.errors import InvalidInput, MissingInput
from masn.model.config import Task
from masn.pipeline.qa.annotations import (
    FRAMEQA_TYPES,
    MSQA_TYPES,
    QARow,
    read_jsonl,
    read_msqa,
    read_tgif,
)

log = logging.getLogger(__name__)

Sampling = Literal["first", "uniform"]
"""Longer videos: their first T sampled frames (the official code) or T spread evenly."""
SPLITS = ("train", "val", "test")
TGIF_SPLITS = ("train", "test")  # validation is split off the training videos


@dataclass(frozen=True)
class TaskSpec:
    """What differs between tasks.

    name: the CLI name. head: the model head. dataset: the feature dataset (official file names
    and keys). frames: T, sampled frames per video. batch_size: the paper's. answer_top: size of
    an open-ended answer set built from training answers (None: every answer). qtypes: question
    type names reported separately. annotations / features: default locations (Makefile layout).
    """

    name: str
    head: Task
    dataset: str
    frames: int
    batch_size: int
    answer_top: int | None = None
    qtypes: tuple[str, ...] = ()
    annotations: str = ""
    features: str = ""

    @property
    def tgif(self) -> bool:
        return self.dataset == "tgif"


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("count", "count", "tgif", 20, 32),
        TaskSpec("action", "multiple_choice", "tgif", 20, 16),
        TaskSpec("transition", "multiple_choice", "tgif", 20, 16),
        TaskSpec("frameqa", "open_ended", "tgif", 20, 32, qtypes=FRAMEQA_TYPES),
        TaskSpec("msvd", "open_ended", "msvd", 30, 32, 1000, (*MSQA_TYPES, "other")),
        TaskSpec("msrvtt", "open_ended", "msrvtt", 30, 32, 4000, (*MSQA_TYPES, "other")),
        TaskSpec("custom", "open_ended", "custom", 20, 32),
    )
}
TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]
"""The task names, as settings and flags accept them."""
_DEFAULT_DIRS = {"tgif": "data/tgif-qa", "msvd": "data/msvd-qa", "msrvtt": "data/msrvtt-qa"}


def task_spec(name: str, head: Task | None = None) -> TaskSpec:
    """The spec of ``name``, with default locations; ``head`` sets a custom collection's head."""
    if name not in TASKS:
        raise InvalidInput(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    spec = TASKS[name]
    if head is not None and head != spec.head:
        if name != "custom":
            raise InvalidInput(f"the {name} task has a {spec.head} head; --head is for custom only")
        spec = replace(spec, head=head)
    annotations = _DEFAULT_DIRS.get(spec.dataset, "data/custom")
    return replace(spec, annotations=annotations, features=f"features/{spec.dataset}.h5")


def split_files(spec: TaskSpec, folder: Path) -> dict[str, Path]:
    """The annotation file of each split the task ships (TGIF and custom may lack ``val``)."""
    if spec.tgif:
        return {s: folder / f"{s.title()}_{spec.name}_question.csv" for s in TGIF_SPLITS}
    if spec.dataset in ("msvd", "msrvtt"):
        return {split: folder / f"{split}_qa.json" for split in SPLITS}
    files = {split: folder / f"{split}.jsonl" for split in SPLITS}
    if not files["val"].exists():
        del files["val"]
    return files


def total_file(spec: TaskSpec, folder: Path) -> Path | None:
    """TGIF-QA's Total file (train + test), which defines FrameQA's answer classes."""
    return folder / f"Total_{spec.name}_question.csv" if spec.tgif else None


def read_split(spec: TaskSpec, path: Path) -> list[QARow]:
    if not path.is_file():
        raise MissingInput(
            f"no {spec.name} annotation file {path}; pass --annotations DIR holding "
            f"{path.name} (see README, 'Training')"
        )
    if spec.tgif:
        return read_tgif(path, spec.name)
    if spec.dataset in ("msvd", "msrvtt"):
        return read_msqa(path, spec.dataset)
    return read_jsonl(path)


def load_splits(
    spec: TaskSpec, folder: str | Path, seed: int, val_fraction: float = 0.1
) -> dict[str, list[QARow]]:
    """train / val / test rows; without a validation file, a seeded share of training videos."""
    folder = Path(folder)
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


def vocabulary_texts(spec: TaskSpec, rows: list[QARow]) -> list[str]:
    """The training texts the word vocabulary is built from (the official choice per task).

    FrameQA: caption, question and answer; multiple choice: question and candidates; the others
    (Count, MSVD, MSRVTT, custom open-ended): questions, plus candidates where there are some.
    """
    texts: list[str] = []
    for row in rows:
        if spec.name == "frameqa":
            texts += [row.description, row.question, str(row.answer)]
        else:
            texts += [row.question, *row.candidates]
    return texts


def infer_head(rows: list[QARow]) -> Task:
    """A custom collection's head from its rows: candidates, integer answers, or text."""
    if any(row.candidates for row in rows):
        return "multiple_choice"
    if rows and all(isinstance(row.answer, int) for row in rows):
        return "count"
    return "open_ended"
