"""From annotation files and a feature source to encoded splits, vocabulary and answer classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masn.extract.store.official_reader import open_features
from masn.pipeline.qa.annotations import QARow
from masn.pipeline.qa.answer_set import AnswerSet, OutOfSet
from masn.pipeline.qa.datasets import FeatureSource, Questions, attach_features, encode_questions
from masn.pipeline.qa.tasks import SPLITS, TaskSpec, read_split, total_file, vocabulary_texts
from masn.pipeline.qa.text import Vocabulary, tokeniser
from masn.weights.glove import load_glove_rows, normal_init

log = logging.getLogger(__name__)

WORD_DIM = 300


def open_source(spec: TaskSpec, path: str | Path) -> FeatureSource:
    """Our feature store (a file) or the official four files (a folder) of the task's dataset."""
    dataset = spec.dataset if spec.dataset in ("tgif", "msvd", "msrvtt") else None
    return open_features(path, dataset)


def answer_classes(
    spec: TaskSpec, rows: dict[str, list[QARow]], folder: Path, top: int | None
) -> AnswerSet | None:
    """Open-ended answer classes (None for count and multiple choice).

    FrameQA: every answer of TGIF-QA's Total file (train + test, as the official code), or of
    the train and test files when the Total file is absent. Others: the ``top`` (default: the
    task's) most frequent training answers.
    """
    if spec.head != "open_ended":
        return None
    if spec.name == "frameqa":
        total = total_file(spec, folder)
        if total is not None and total.is_file():
            answers = [str(row.answer) for row in read_split(spec, total)]
        else:
            log.info("%s absent: FrameQA answer classes from the train and test files", total)
            answers = [str(row.answer) for split in SPLITS for row in rows[split]]
        return AnswerSet.most_frequent(answers)
    classes = AnswerSet.most_frequent(
        (str(row.answer) for row in rows["train"]), top if top is not None else spec.answer_top
    )
    log.info("%d answer classes from %d training answers", len(classes), len(rows["train"]))
    return classes


@dataclass
class TaskData:
    """Encoded splits (only questions with features), vocabulary, answer classes, source."""

    spec: TaskSpec
    vocabulary: Vocabulary
    tokenizer: str
    answers: AnswerSet | None
    splits: dict[str, Questions]
    source: FeatureSource


def prepare_task(
    spec: TaskSpec,
    rows: dict[str, list[QARow]],
    folder: Path,
    source: FeatureSource,
    tokenizer: str,
    policy: OutOfSet,
    answers_top: int | None = None,
) -> TaskData:
    """Builds vocabulary and answer classes from training data and encodes every split."""
    tokenise = tokeniser(tokenizer)
    vocabulary = Vocabulary.build(vocabulary_texts(spec, rows["train"]), tokenise)
    log.info("vocabulary: %d words (%s tokeniser)", len(vocabulary), tokenizer)
    answers = answer_classes(spec, rows, folder, answers_top)
    splits = {
        split: attach_features(
            encode_questions(
                rows[split], spec, vocabulary, tokenise, answers, policy, split == "train"
            ),
            source,
            split,
        )
        for split in SPLITS
    }
    return TaskData(spec, vocabulary, tokenizer, answers, splits, source)


def word_vectors(
    vocabulary: Vocabulary, glove: str | Path | None, cache: Path | None, seed: int
) -> torch.Tensor:
    """(V, d) frozen word vectors: GloVe rows (N(0,1) for words GloVe lacks), or all N(0,1)
    when ``glove`` is None (smoke runs and the demo without downloaded vectors)."""
    if glove is None:
        rng = np.random.default_rng(seed)
        return torch.from_numpy(normal_init(rng, len(vocabulary), WORD_DIM))
    rows = load_glove_rows(glove, vocabulary.words, cache, seed=seed)
    return torch.from_numpy(rows.vectors)


def feature_dims(source: FeatureSource, key: str) -> dict[str, int]:
    """Appearance and motion widths of the source (from one video)."""
    record = source.read(key, ("appearance", "motion"))
    return {"appearance_dim": record.appearance.shape[-1], "motion_dim": record.motion.shape[-1]}
