"""What a dataset module declares: the dataset, its tasks, its official feature files, and the
results published on it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from masn.datasets.annotations import QARow

if TYPE_CHECKING:
    from masn.model.config import Task

Sampling = Literal["first", "uniform"]
"""Longer videos: their first T sampled frames (the official code) or T spread evenly."""
SPLITS = ("train", "val", "test")
Keyer = Callable[[str], "str | None"]
"""A video file's path relative to the videos folder (POSIX) -> its key (None: not a video of
the dataset)."""


def question_texts(row: QARow) -> list[str]:
    """The texts of a training row the word vocabulary is built from: the question and its
    candidates (the official choice for every task but FrameQA)."""
    return [row.question, *row.candidates]


def training_answers(
    spec: TaskSpec, folder: Path, rows: Mapping[str, Sequence[QARow]]
) -> list[str]:
    """The answers the open-ended classes are drawn from (the most frequent ``answer_top``):
    the training answers."""
    return [str(row.answer) for row in rows["train"]]


@dataclass(frozen=True)
class Published:
    """A result published on a task: the paper's figure that `masn evaluate` prints beside
    the measured one."""

    metric: Literal["accuracy", "mse"]
    value: float
    source: str = "MASN (Seo et al., ACL 2021)"


@dataclass(frozen=True)
class TaskSpec:
    """One task of a dataset: what its questions are and the paper's settings for it.

    name: the task's name (``masn train --task``). head: the model head. frames: T, sampled
    frames per video. batch_size: the paper's. sampling: which frames of longer videos.
    answer_top: open-ended answer classes kept (None: all). qtypes: question types reported
    separately; type_groups: named groups of them, reported too. official_name: the official
    code's name of the task. published: the result the paper reports.
    vocabulary_texts / answer_pool: which texts build the vocabulary, and the answers the
    open-ended classes are drawn from. from_rows: the question types, and the head where it is
    None, come from the questions (a collection of your own; ``--head`` may set the head).
    """

    name: str
    dataset: str
    head: Task | None
    frames: int
    batch_size: int
    sampling: Sampling = "first"
    answer_top: int | None = None
    qtypes: tuple[str, ...] = ()
    type_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    official_name: str | None = None
    published: Published | None = None
    vocabulary_texts: Callable[[QARow], list[str]] = question_texts
    answer_pool: Callable[[TaskSpec, Path, Mapping[str, Sequence[QARow]]], list[str]] = (
        training_answers
    )
    from_rows: bool = False


@dataclass(frozen=True)
class OfficialFiles:
    """The four feature files the official MASN loaders open for a dataset, and its official
    video keys: their pattern, what they are (``keys``), and the question file that maps ours to
    them where there is one (``key_map_file``). ``motion_objects_hint``: said when the motion
    objects file is missing (e.g. a download named otherwise)."""

    appearance: str
    motion: str
    objects: str
    motion_objects: str
    key_pattern: str
    keys: str
    key_map_file: str | None = None
    motion_objects_hint: str = ""

    def names(self) -> tuple[str, str, str, str]:
        """The four names in the order appearance, motion, objects, motion objects."""
        return (self.appearance, self.motion, self.objects, self.motion_objects)


@dataclass(frozen=True)
class Dataset:
    """A dataset: its videos, its questions and its tasks.

    name: ``masn extract --dataset``. annotations: the default folder of its question files.
    split_files: the question file of each split a folder holds (``val`` may be absent: then a
    seeded share of the training videos is held out). read: one question file's rows.
    video_extension: the extension of its video files (None: any video). keyer: how files are
    keyed, given ``--mapping``; keyed: which of its files have a key, for messages about the
    others. official: its files in the official MASN feature layout, where there is one. links:
    where its questions and videos come from.
    """

    name: str
    title: str
    tasks: tuple[TaskSpec, ...]
    annotations: str
    split_files: Callable[[TaskSpec, Path], dict[str, Path]]
    read: Callable[[TaskSpec, Path], list[QARow]]
    keyer: Callable[[Path | None], Keyer]
    video_extension: str | None = None
    keyed: str = ""
    official: OfficialFiles | None = None
    links: dict[str, str] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        """The task called ``name``."""
        return next(task for task in self.tasks if task.name == name)
