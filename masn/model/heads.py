"""Task heads: the output layer, its loss and its prediction rule for each question type."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.model.config import MASNConfig

COUNT_RANGE = (1, 10)


class Head(nn.Module, ABC):
    """Maps pooled vectors (N, d) to raw outputs; subclasses define shape, loss and prediction."""

    def __init__(self, hidden: int, outputs: int):
        super().__init__()
        self.fc = nn.Linear(hidden, outputs)

    @abstractmethod
    def forward(self, pooled: Tensor, batch: int) -> Tensor:
        """Raw outputs for a batch of ``batch`` videos."""

    @abstractmethod
    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean training loss of raw outputs against targets."""

    @abstractmethod
    def predict(self, output: Tensor) -> Tensor:
        """Predicted answers (int64) from raw outputs."""


class CountHead(Head):
    """Regression: output (B,), MSE loss, prediction ``clamp(round(output), 1, 10)``."""

    def __init__(self, hidden: int):
        super().__init__(hidden, 1)

    def forward(self, pooled: Tensor, batch: int) -> Tensor:
        return self.fc(pooled).view(batch)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(output, target.to(output.dtype))

    def predict(self, output: Tensor) -> Tensor:
        return torch.round(output).clamp(*COUNT_RANGE).long()


class OpenEndedHead(Head):
    """Classification over an answer set: logits (B, A), cross-entropy, argmax."""

    def forward(self, pooled: Tensor, batch: int) -> Tensor:
        return self.fc(pooled).view(batch, -1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(dim=-1)


class MultipleChoiceHead(Head):
    """One score per candidate: scores (B, C), hinge loss, argmax.

    The loss is ``max(0, 1 + s_wrong - s_correct)`` over the (correct, wrong) pairs of each
    question, averaged over all B x (C - 1) pairs, as in the official code.
    """

    margin = 1.0

    def __init__(self, hidden: int):
        super().__init__(hidden, 1)

    def forward(self, pooled: Tensor, batch: int) -> Tensor:
        return self.fc(pooled).view(batch, -1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        correct = output.gather(1, target.unsqueeze(1))
        hinge = (self.margin + output - correct).clamp(min=0)
        wrong = torch.ones_like(hinge).scatter_(1, target.unsqueeze(1), 0.0)
        return (hinge * wrong).sum() / wrong.sum()

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(dim=-1)


def build_head(config: MASNConfig) -> Head:
    if config.task == "count":
        return CountHead(config.hidden)
    if config.task == "multiple_choice":
        return MultipleChoiceHead(config.hidden)
    return OpenEndedHead(config.hidden, config.num_answers)
