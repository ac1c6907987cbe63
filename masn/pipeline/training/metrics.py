"""Evaluation tallies: accuracy (or Count MSE) overall and per question type, across processes.

Count follows the paper: predictions are ``clamp(round(output), 1, 10)``, labels ``max(answer,
1)`` (TGIF-QA's 0 means 1), and the reported number is the mean squared error between them;
exact-match accuracy is given too. Open-ended questions whose answer lies outside the answer
set have target ``OUT_OF_SET`` and count as wrong.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from masn.datasets.spec import TaskSpec
from masn.errors import InvalidInput
from masn.model.heads import COUNT_RANGE

_N, _CORRECT, _SQUARED = range(3)


class Tally:
    """Running sums per question type: questions, correct answers, squared count errors.

    groups: named groups of question types, reported as wholes too (NExT-QA's causal,
    temporal and descriptive questions)."""

    def __init__(
        self,
        count: bool,
        qtypes: tuple[str, ...] = (),
        groups: tuple[tuple[str, tuple[str, ...]], ...] = (),
    ):
        self.count = count
        self.qtypes = qtypes
        self.groups = groups
        self.sums = torch.zeros(max(len(qtypes), 1), 3, dtype=torch.float64)

    def add(self, predictions: Tensor, targets: Tensor, qtypes: Tensor) -> None:
        """One batch: predicted answers, targets and question-type indices (any device)."""
        predictions, targets, qtypes = predictions.cpu(), targets.cpu(), qtypes.cpu()
        if self.count:
            labels = targets.round().clamp(*COUNT_RANGE)
            correct = predictions.double() == labels
            squared = (predictions.double() - labels.double()) ** 2
        else:
            correct = predictions == targets
            squared = torch.zeros(len(targets), dtype=torch.float64)
        rows = torch.stack([torch.ones_like(squared), correct.double(), squared], dim=1)
        types = qtypes if self.qtypes else torch.zeros_like(qtypes)
        self.sums.index_add_(0, types, rows)

    def all_reduce(self) -> None:
        """Sums over every process of a distributed run (no-op in a single process)."""
        if dist.is_available() and dist.is_initialized():
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            sums = self.sums.to(device)
            dist.all_reduce(sums)
            self.sums = sums.cpu()

    def summary(self) -> dict[str, Any]:
        """Questions, accuracy in %, MSE for counts; per type when the task has types."""
        result = _figures(self.sums.sum(0), self.count)
        if self.qtypes:
            result["per_type"] = {
                name: _figures(row, self.count)
                for name, row in zip(self.qtypes, self.sums, strict=True)
                if row[_N] > 0
            }
        if self.groups:
            index = {name: i for i, name in enumerate(self.qtypes)}
            result["per_group"] = {
                group: _figures(self.sums[[index[t] for t in types]].sum(0), self.count)
                for group, types in self.groups
            }
        return result


def _figures(row: Tensor, count: bool) -> dict[str, Any]:
    n = int(row[_N])
    figures: dict[str, Any] = {"questions": n, "accuracy": _ratio(100 * row[_CORRECT], n)}
    if count:
        figures["mse"] = _ratio(row[_SQUARED], n)
    return figures


def _ratio(total: Tensor, n: int) -> float | None:
    return round(float(total) / n, 4) if n else None


def beside_paper(spec: TaskSpec, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The paper's test figure for the task next to the one measured (None where the dataset
    module knows none)."""
    published = spec.published
    if published is None:
        return None
    return {
        "metric": published.metric,
        "paper": published.value,
        "measured": summary.get(published.metric),
        "source": published.source,
    }


def selection_metric(summary: dict[str, Any], count: bool) -> float:
    """A number where larger is better: accuracy, or minus the MSE for counts."""
    value = summary["mse"] if count else summary["accuracy"]
    if value is None:
        raise InvalidInput("the selection split has no questions")
    return -value if count else value
