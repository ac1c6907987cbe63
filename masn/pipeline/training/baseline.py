"""Baselines reported next to MASN: what an answer is worth without the video.

Open-ended: always the most frequent training answer. Count: always the mean training count.
Multiple choice: the answer-only model, candidates alone, no video, no question. TGIF-QA's
wrong candidates are drawn so that the right one often stands out on its own
(YunseokJANG/tgif-qa#18 reports > 90 % for answer-only models on Action and Transition).
Reporting this baseline next to MASN shows how much of an accuracy comes from the video and
the question. The model scores a candidate from the mean of its word vectors (initialised from
MASN's GloVe rows, then trained) through a small MLP, with cross-entropy over the candidates.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masn.datasets.annotations import QARow
from masn.model import MASN
from masn.model.heads import COUNT_RANGE
from masn.pipeline.qa.questions import Questions
from masn.pipeline.qa.text import Tokeniser, Vocabulary

log = logging.getLogger(__name__)

ANSWER_WIDTH = 12  # tokens per candidate


class AnswerOnly(nn.Module):
    """Score of each candidate from its words alone."""

    def __init__(self, word_vectors: Tensor, hidden: int = 256):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(word_vectors.float(), freeze=False)
        self.score = nn.Sequential(
            nn.Linear(word_vectors.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, C, W) -> scores (B, C); id 0 is padding."""
        mask = (tokens > 0).unsqueeze(-1).float()
        mean = (self.embedding(tokens) * mask).sum(2) / mask.sum(2).clamp(min=1)
        return self.score(mean).squeeze(-1)


def candidate_tokens(rows: list[QARow], vocabulary: Vocabulary, tokenise: Tokeniser) -> Tensor:
    """(M, C, ANSWER_WIDTH) ids of each candidate's own words."""
    encoded = [
        [vocabulary.encode(tokenise(c), ANSWER_WIDTH)[0] for c in row.candidates] for row in rows
    ]
    return torch.from_numpy(np.asarray(encoded, dtype=np.int64))


def answer_only_baseline(
    masn: MASN,
    train: list[QARow],
    test: Questions,
    vocabulary: Vocabulary,
    tokenise: Tokeniser,
    seed: int,
    epochs: int = 10,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Trains on ``train`` rows from ``masn``'s word vectors, returns accuracy on the ``test``
    questions (and chance level)."""
    word_vectors = masn.question.embedding.weight.detach().cpu()
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    model = AnswerOnly(word_vectors)
    torch.set_rng_state(torch_state)  # the baseline never disturbs the caller's random stream
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = candidate_tokens(train, vocabulary, tokenise)
    targets = torch.tensor([int(row.answer) for row in train])
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            chosen = order[start : start + batch_size]
            loss = F.cross_entropy(model(tokens[chosen]), targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = model(candidate_tokens(test.rows, vocabulary, tokenise)).argmax(-1)
    correct = (predictions == torch.from_numpy(test.targets)).double().mean()
    candidates = len(test.rows[0].candidates) if test.rows else 0
    result = {
        "questions": len(test),
        "accuracy": round(100 * float(correct), 4) if len(test) else None,
        "chance": round(100 / candidates, 2) if candidates else None,
        "trained_on": len(train),
        "inputs": "candidate answers only (no video, no question)",
    }
    log.info("answer-only baseline: %s %% (chance %s %%)", result["accuracy"], result["chance"])
    return result


def majority_baseline(train: list[QARow], test: Questions, classes: int) -> dict[str, Any]:
    """Open-ended: accuracy of always giving the most frequent training answer, and chance
    (one of the ``classes`` answer classes at random)."""
    if not train:
        raise ValueError("the majority baseline needs training questions")
    answer = Counter(str(row.answer) for row in train).most_common(1)[0][0]
    correct = sum(str(row.answer) == answer for row in test.rows)
    return {
        "questions": len(test),
        "accuracy": round(100 * correct / len(test), 4) if len(test) else None,
        "answer": answer,
        "chance": round(100 / classes, 2),
        "inputs": "the most frequent training answer",
    }


def mean_baseline(train: list[QARow], test: Questions) -> dict[str, Any]:
    """Count: MSE of always answering the mean training count, and of chance (a count drawn
    uniformly from the training range)."""
    counts = [max(int(row.answer), 1) for row in train]
    if not counts:
        raise ValueError("the mean baseline needs training questions")
    mean = float(np.mean(counts))
    labels = np.clip(np.round(test.targets.astype(np.float64)), *COUNT_RANGE)
    guesses = np.arange(min(counts), max(counts) + 1, dtype=np.float64)
    chance = np.square(guesses[None, :] - labels[:, None]).mean() if len(labels) else None
    return {
        "questions": len(test),
        "mse": round(float(np.square(labels - mean).mean()), 4) if len(labels) else None,
        "mean": round(mean, 4),
        "chance_mse": None if chance is None else round(float(chance), 4),
        "inputs": "the mean training count",
    }
