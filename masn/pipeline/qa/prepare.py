"""From annotation files and a feature source to encoded splits, vocabulary and answer classes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masn.datasets import get_dataset
from masn.datasets.annotations import QARow
from masn.datasets.spec import SPLITS, TaskSpec
from masn.extract.store.official_reader import open_features
from masn.pipeline.qa.answer_set import AnswerSet, OutOfSet
from masn.pipeline.qa.questions import FeatureSource, Questions, attach_features, encode_questions
from masn.pipeline.qa.text import Vocabulary, tokeniser
from masn.weights.glove import load_glove_rows, normal_init

log = logging.getLogger(__name__)

WORD_DIM = 300


def open_source(spec: TaskSpec, path: str | Path) -> FeatureSource:
    """Our feature store (a file) or the official four files (a folder) of the task's dataset."""
    official = get_dataset(spec.dataset).official is not None
    return open_features(path, spec.dataset if official else None)


def answer_classes(
    spec: TaskSpec, rows: dict[str, list[QARow]], folder: Path, top: int | None
) -> AnswerSet | None:
    """Open-ended answer classes (None for count and multiple choice): the ``top`` (default:
    the task's) most frequent answers of the task's answer pool (``TaskSpec.answer_pool``)."""
    if spec.head != "open_ended":
        return None
    pool = spec.answer_pool(spec, folder, rows)
    classes = AnswerSet.most_frequent(pool, top if top is not None else spec.answer_top)
    log.info("%d answer classes from %d answers", len(classes), len(pool))
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
    texts = [text for row in rows["train"] for text in spec.vocabulary_texts(row)]
    vocabulary = Vocabulary.build(texts, tokenise)
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


def feature_dims(source: FeatureSource) -> dict[str, int]:
    """The model's input widths (``MASNConfig.*_dim``): the widths the feature source holds."""
    return {f"{name}_dim": width for name, width in source.widths.items()}
