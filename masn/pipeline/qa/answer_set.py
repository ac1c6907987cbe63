"""Answer classes of open-ended tasks and the policy for answers outside them.

TGIF-QA FrameQA uses every answer of its Total file (train + test); MSVD-QA and MSRVTT-QA the
1,000 / 4,000 most frequent training answers. The official code maps an answer outside the set
to class 1, a real class, in every split (so a test question with a rare answer counts as right
when the model says class 1). The default policy here drops such questions from training and
counts them as wrong in evaluation; ``reference`` keeps the official mapping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from masn.errors import InvalidInput

OutOfSet = Literal["wrong", "reference"]
OUT_OF_SET = -1  # target of an evaluation question whose answer has no class ("wrong" policy)
REFERENCE_CLASS = 1  # the class the official code gives such questions


@dataclass(frozen=True)
class AnswerSet:
    """Answer texts by class index."""

    answers: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.answers) < 2:
            raise InvalidInput(f"an answer set needs at least 2 answers, got {len(self.answers)}")
        if len(set(self.answers)) != len(self.answers):
            raise InvalidInput("answer set has duplicate answers")
        object.__setattr__(self, "_index", {a: i for i, a in enumerate(self.answers)})

    @classmethod
    def most_frequent(cls, answers: Iterable[str], top: int | None = None) -> AnswerSet:
        """The ``top`` most frequent answers (all when None); ties keep first-occurrence order."""
        counts = Counter(answers)
        ranked = sorted(counts, key=lambda answer: -counts[answer])  # stable: first occurrence
        return cls(tuple(ranked[:top] if top is not None else ranked))

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int | None:
        """The class of ``answer``, None when it is outside the set."""
        return self._index.get(answer)  # type: ignore[attr-defined]

    def target(self, answer: str, policy: OutOfSet) -> int:
        """Training/evaluation target: the class, or the policy's stand-in for unknown answers."""
        index = self.index(answer)
        if index is not None:
            return index
        return REFERENCE_CLASS if policy == "reference" else OUT_OF_SET
