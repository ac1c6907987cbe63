"""Questions as the model reads them: encoded questions, videos cut or padded to T, batches.

A feature source is our store (``extract.store.FeatureStore``) or the official four-file folder
(``extract.official_layout.OfficialFeatures``); both read one video per call, and both reopen
their files in each DataLoader worker. Features keep their stored dtype (float16 by default) all
the way into pinned batches, halving host traffic; the model casts them on the device.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from masn.datasets.annotations import QARow, count_error
from masn.datasets.spec import Sampling, TaskSpec
from masn.errors import InvalidInput, UnknownName
from masn.extract.store.schema import VideoRecord
from masn.model import VideoFeatures
from masn.pipeline.qa.answer_set import OUT_OF_SET, AnswerSet, OutOfSet
from masn.pipeline.qa.text import QUESTION_WIDTH, Tokeniser, Vocabulary

log = logging.getLogger(__name__)

# Store field -> VideoFeatures field.
VIDEO_FIELDS = {
    "appearance": "appearance",
    "motion": "motion",
    "appearance_objects": "appearance_objects",
    "motion_objects": "motion_objects",
    "box_geometry": "boxes",
}
_EXAMPLES = 5


class FeatureSource(Protocol):
    """What a dataset needs from a feature store: membership and per-video reads."""

    path: object

    @property
    def widths(self) -> dict[str, int]: ...

    def __contains__(self, key: object) -> bool: ...

    def keys(self) -> list[str]: ...

    def read(self, key: str, fields: Sequence[str] | None = None) -> VideoRecord: ...

    def damaged(self, keys: Iterable[str]) -> dict[str, str]: ...


@dataclass
class Questions:
    """One split's questions as arrays, aligned with ``rows``.

    tokens (M, S) int64 or (M, C, S) for multiple choice (question + candidate per row);
    lengths (M,) or (M, C); targets (M,): float32 counts, or int64 classes / candidate indices
    (``OUT_OF_SET`` for an evaluation answer outside the answer set); qtypes (M,) int64 index into
    the task's question types (0 when it has none); keys: the feature key of each question;
    damaged: the videos whose questions were left out because their features are damaged, with
    what is wrong (:func:`attach_features`).
    """

    rows: list[QARow]
    keys: list[str]
    tokens: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    qtypes: np.ndarray
    damaged: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> Questions:
        """The questions at the boolean mask or indices ``keep``."""
        index = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Questions(
            [self.rows[i] for i in index],
            [self.keys[i] for i in index],
            self.tokens[index],
            self.lengths[index],
            self.targets[index],
            self.qtypes[index],
            self.damaged,
        )


def encode_questions(
    rows: list[QARow],
    spec: TaskSpec,
    vocabulary: Vocabulary,
    tokenise: Tokeniser,
    answers: AnswerSet | None,
    policy: OutOfSet = "wrong",
    training: bool = False,
) -> Questions:
    """Token ids and targets of ``rows``; training drops answers outside the set ("wrong")."""
    multiple_choice = spec.head == "multiple_choice"
    if multiple_choice:
        _check_candidate_counts(rows)
    tokens, lengths, targets = [], [], []
    for row in rows:
        candidates = row.candidates if multiple_choice else ()
        ids, length = encode_question(row.question, candidates, vocabulary, tokenise)
        tokens.append(ids)
        lengths.append(length)
        targets.append(_target(row, spec, answers, policy))
    qtype_index = {name: i for i, name in enumerate(spec.qtypes)}
    qtypes = [qtype_index.get(row.qtype, 0) for row in rows]
    width = (
        (len(rows[0].candidates), QUESTION_WIDTH) if multiple_choice and rows else (QUESTION_WIDTH,)
    )
    questions = Questions(
        rows,
        [row.keys[0] for row in rows],
        np.stack(tokens) if rows else np.zeros((0, *width), np.int64),
        np.asarray(lengths, dtype=np.int64),
        np.asarray(targets, dtype=np.float32 if spec.head == "count" else np.int64),
        np.asarray(qtypes, dtype=np.int64),
    )
    if training and spec.head == "open_ended":
        known = questions.targets != OUT_OF_SET
        if not known.all():
            log.info(
                "%d training questions have answers outside the %d classes: left out",
                int((~known).sum()),
                len(answers or ()),
            )
            questions = questions.subset(known)
    return questions


def candidate_texts(question: str, candidates: Sequence[str]) -> list[str]:
    """What the model reads for each multiple-choice candidate: the question, then the
    candidate."""
    return [f"{question.strip()} {candidate.strip()}" for candidate in candidates]


def encode_question(
    question: str, candidates: Sequence[str], vocabulary: Vocabulary, tokenise: Tokeniser
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and lengths of one question: (S,) and () without candidates; with
    multiple-choice ``candidates``, (C, S) and (C,), one row per :func:`candidate_texts`."""
    if not candidates:
        ids, length = vocabulary.encode(tokenise(question))
        return ids, np.asarray(length, dtype=np.int64)
    encoded = [vocabulary.encode(tokenise(text)) for text in candidate_texts(question, candidates)]
    lengths = np.asarray([length for _, length in encoded], dtype=np.int64)
    return np.stack([ids for ids, _ in encoded]), lengths


def _check_candidate_counts(rows: list[QARow]) -> None:
    """Every question of a multiple-choice split has as many candidates as the first one."""
    for row in rows:
        if not row.candidates:
            raise InvalidInput(f"{row.source}: a multiple-choice question needs candidates")
        if len(row.candidates) != len(rows[0].candidates):
            raise InvalidInput(
                f"{row.source}: {len(row.candidates)} candidates, but the first question "
                f"({rows[0].source}) has {len(rows[0].candidates)}; every multiple-choice "
                "question needs the same number of candidates"
            )


def _target(row: QARow, spec: TaskSpec, answers: AnswerSet | None, policy: OutOfSet) -> float:
    if spec.head == "open_ended":
        if answers is None:
            raise ValueError("open-ended questions need an answer set")
        if row.candidates:  # a multiple-choice row: its answer is a candidate's index
            raise InvalidInput(
                f"{row.source}: the question has candidate answers, but the task is open-ended; "
                "multiple-choice questions need a multiple-choice task (--head multiple_choice "
                "for a custom collection) and a multiple-choice model"
            )
        if isinstance(row.answer, int):  # a count row of our JSONL: read as text, never right
            raise InvalidInput(
                f"{row.source}: the answer {row.answer} is a count, but the task is open-ended; "
                "count questions need a count task (--task count, or --head count for a custom "
                "collection) and a count model"
            )
        return answers.target(str(row.answer), policy)
    if not isinstance(row.answer, int):
        kind = "a count" if spec.head == "count" else "a candidate index"
        raise InvalidInput(
            f"{row.source}: the answer must be {kind}, got {row.answer!r}: the task is "
            f"{spec.head.replace('_', '-')}; give these questions to a model trained on their "
            "kind (a custom collection's kind comes from its rows, or --head)"
        )
    if spec.head == "count":
        problem = count_error(row.answer)
        if problem:  # the readers refuse these; rows built in code are checked here
            raise InvalidInput(f"{row.source}: {problem}")
        return float(max(row.answer, 1))  # TGIF-QA writes 0 where it means 1 (no 1s occur)
    if not 0 <= row.answer < len(row.candidates):
        raise InvalidInput(f"{row.source}: answer index {row.answer} outside the candidates")
    return row.answer


def attach_features(questions: Questions, source: FeatureSource, split: str) -> Questions:
    """Points each question at the first of its keys the source holds; drops (and reports) the
    questions whose video has no features, or damaged ones. Never substitutes zeros for a
    missing video.

    Damaged videos (a dataset missing, another shape or dtype than the store's) are left out
    with a warning naming each and what is wrong, and kept in ``Questions.damaged`` for the
    report, rather than refused: the check reads the HDF5 headers only (about a millisecond a
    video, no feature data), so it runs before any training, and one damaged video of a large
    store does not stop a run. NaN values need the data: they are found as a video is read
    (``FeatureStore.read``), and stop the run naming the video."""
    found = np.zeros(len(questions), dtype=bool)
    keys = list(questions.keys)
    for i, row in enumerate(questions.rows):
        for key in row.keys:
            if key in source:
                found[i], keys[i] = True, key
                break
    questions = replace(questions, keys=keys)
    missing = [row for row, hit in zip(questions.rows, found, strict=True) if not hit]
    if missing:
        videos = sorted({row.keys[0] for row in missing})
        examples = ", ".join(repr(v) for v in videos[:_EXAMPLES])
        message = (
            f"{split}: {len(missing)} of {len(questions)} questions ({len(videos)} videos) have "
            f"no features in {source.path} (e.g. {examples})"
        )
        if len(missing) == len(questions):
            some = ", ".join(repr(k) for k in source.keys()[:_EXAMPLES])
            raise UnknownName(
                f"{message}; the source's keys look like {some}. Extract these videos "
                "(masn extract --dataset ...) or point --features at their store"
            )
        log.warning("%s: they are left out", message)
    return _leave_out_damaged(questions.subset(found), source, split)


def _leave_out_damaged(questions: Questions, source: FeatureSource, split: str) -> Questions:
    damaged = source.damaged(dict.fromkeys(questions.keys))
    if not damaged:
        return questions
    keep = np.array([key not in damaged for key in questions.keys], dtype=bool)
    shown = list(damaged.items())[:_EXAMPLES]
    examples = "; ".join(f"{key!r} ({problem})" for key, problem in shown)
    more = f" and {len(damaged) - len(shown)} more" if len(damaged) > len(shown) else ""
    where = f"their features in {source.path} are damaged: {examples}{more}"
    if not keep.any():
        raise InvalidInput(f"{split}: no question is left: {where}; re-extract them")
    log.warning(
        "%s: %d of %d questions (%d %s) are left out: %s; re-extract them into a new store",
        split,
        int((~keep).sum()),
        len(questions),
        len(damaged),
        "video" if len(damaged) == 1 else "videos",
        where,
    )
    return replace(questions.subset(keep), damaged=damaged)


def frame_indices(length: int, frames: int, sampling: Sampling) -> np.ndarray:
    """Which sampled frames feed the model: the first T (official) or T spread evenly."""
    if length <= frames or sampling == "first":
        return np.arange(min(length, frames))
    return np.round(np.linspace(0, length - 1, frames)).astype(np.int64)


class QADataset(Dataset):
    """Questions with their videos, each video cut or zero-padded to ``frames`` sampled frames."""

    def __init__(
        self, questions: Questions, source: FeatureSource, frames: int, sampling: Sampling
    ):
        if sampling not in ("first", "uniform"):
            raise ValueError(f"sampling must be 'first' or 'uniform', got {sampling!r}")
        self.questions = questions
        self.source = source
        self.frames = frames
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int, int]:
        record = self.source.read(self.questions.keys[index], tuple(VIDEO_FIELDS))
        arrays, chosen = pad_video(record, self.frames, self.sampling)
        return arrays, len(chosen), index


def pad_video(
    record: VideoRecord, frames: int, sampling: Sampling
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model's arrays of one video (VideoFeatures names, stored dtype), cut to or
    zero-padded to ``frames`` sampled frames, and the indices of the frames kept."""
    length = int(record.appearance.shape[0])
    chosen = frame_indices(length, frames, sampling)
    arrays = {}
    for field, name in VIDEO_FIELDS.items():
        array = getattr(record, field)
        if array.shape[0] != length:
            raise InvalidInput(
                f"video {record.key!r}: {field} has {array.shape[0]} frames, appearance "
                f"{length}; the store is inconsistent"
            )
        padded = np.zeros((frames, *array.shape[1:]), dtype=array.dtype)
        padded[: len(chosen)] = array[chosen]
        arrays[name] = padded
    return arrays, chosen


@dataclass
class Batch:
    """A collated batch; ``index`` points into the split's questions."""

    video: VideoFeatures
    tokens: Tensor
    lengths: Tensor
    targets: Tensor
    qtypes: Tensor
    index: Tensor

    def __len__(self) -> int:
        return self.index.numel()

    def pin_memory(self) -> Batch:
        """Page-locked copies (DataLoader calls this when ``pin_memory=True``)."""
        pinned = {f.name: getattr(self.video, f.name).pin_memory() for f in fields(VideoFeatures)}
        rest = (getattr(self, f.name).pin_memory() for f in fields(self)[1:])
        return Batch(VideoFeatures(**pinned), *rest)

    def to(self, device: torch.device) -> Batch:
        """Features to ``device`` as float32 (autocast lowers them where it pays); question
        lengths stay where they are (the model reads them without a host synchronisation)."""
        return Batch(
            self.video.to(device, torch.float32),
            self.tokens.to(device, non_blocking=True),
            self.lengths,
            self.targets.to(device, non_blocking=True),
            self.qtypes,
            self.index,
        )


class Collate:
    """Stacks dataset items with the split's question arrays into a :class:`Batch`."""

    def __init__(self, questions: Questions):
        self.questions = questions

    def __call__(self, items: list[tuple[dict[str, np.ndarray], int, int]]) -> Batch:
        index = np.asarray([i for _, _, i in items], dtype=np.int64)
        video = {
            name: torch.from_numpy(np.stack([arrays[name] for arrays, _, _ in items]))
            for name in VIDEO_FIELDS.values()
        }
        lengths = torch.tensor([n for _, n, _ in items], dtype=torch.int64)
        q = self.questions
        return Batch(
            VideoFeatures(**video, lengths=lengths),
            torch.from_numpy(q.tokens[index]),
            torch.from_numpy(q.lengths[index]),
            torch.from_numpy(q.targets[index]),
            torch.from_numpy(q.qtypes[index]),
            torch.from_numpy(index),
        )
