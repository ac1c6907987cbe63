"""Baselines without the video: the majority answer (open-ended) and the mean count (count)."""

from __future__ import annotations

import numpy as np
import pytest

from masn.datasets.annotations import QARow
from masn.pipeline.qa.questions import Questions
from masn.pipeline.training.baseline import majority_baseline, mean_baseline


def _rows(answers: list) -> list[QARow]:
    return [
        QARow(question="q?", answer=a, keys=(f"v{i}",), source=f"t:{i}")
        for i, a in enumerate(answers)
    ]


def _questions(answers: list, targets: list[float] | None = None) -> Questions:
    n = len(answers)
    values = np.asarray(targets if targets is not None else np.zeros(n), np.float32)
    tokens = np.zeros((n, 2), np.int64)
    return Questions(
        _rows(answers), [f"v{i}" for i in range(n)], tokens, np.ones(n), values, np.zeros(n)
    )


def test_majority_baseline_always_gives_the_most_frequent_training_answer() -> None:
    train = _rows(["red", "blue", "red", "green", "red", "blue"])
    test = _questions(["red", "blue", "blue", "green"])
    result = majority_baseline(train, test, classes=8)
    assert result["answer"] == "red"
    assert result["accuracy"] == 25.0 and result["questions"] == 4
    assert result["chance"] == 12.5


def test_mean_baseline_always_answers_the_training_mean() -> None:
    train = _rows([1, 2, 2, 4, 4])  # mean 2.6
    test = _questions([1, 3, 4, 4], targets=[1, 3, 4, 4])
    result = mean_baseline(train, test)
    assert result["mean"] == pytest.approx(2.6)
    assert result["mse"] == pytest.approx((1.6**2 + 0.4**2 + 1.4**2 + 1.4**2) / 4)
    # chance: a count drawn uniformly from 1..4 (the training range)
    expected = np.mean([(g - y) ** 2 for y in (1, 3, 4, 4) for g in (1, 2, 3, 4)])
    assert result["chance_mse"] == pytest.approx(expected)


def test_mean_baseline_reads_zero_as_one_like_the_count_metric() -> None:
    result = mean_baseline(_rows([0, 0, 1]), _questions([1, 2], targets=[1, 2]))
    assert result["mean"] == 1.0 and result["mse"] == pytest.approx(0.5)  # (0 + 1) / 2


def test_baselines_need_training_questions() -> None:
    with pytest.raises(ValueError, match="training"):
        majority_baseline([], _questions(["a"]), classes=2)
    with pytest.raises(ValueError, match="training"):
        mean_baseline([], _questions([1], targets=[1]))
