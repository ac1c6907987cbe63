"""Evaluation helpers on their own: the top answers of one output (predictions.jsonl and
`masn answer` both list them); whole evaluations run in test_trainer.py."""

from __future__ import annotations

import pytest
import torch

from masn.pipeline.training.evaluate import TOP, top_answers


def test_open_ended_top_answers_are_softmax_probabilities_best_first():
    output = torch.tensor([0.0, 3.0, 1.0, -2.0, 2.0, 0.5, 0.1])
    top = top_answers(output, "open_ended")
    probabilities = output.softmax(-1)
    assert [index for index, _ in top] == [1, 4, 2, 5, 6] and len(top) == TOP
    assert [score for _, score in top] == pytest.approx(probabilities[[1, 4, 2, 5, 6]].tolist())


def test_multiple_choice_top_answers_are_raw_scores_of_every_candidate():
    output = torch.tensor([-1.5, 2.0, 0.25])
    assert top_answers(output, "multiple_choice") == [(1, 2.0), (2, 0.25), (0, -1.5)]
    assert top_answers(output, "multiple_choice", k=1) == [(1, 2.0)]
