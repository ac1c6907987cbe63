"""Question text to token ids: the two tokenisers and the word vocabulary.

``official`` reproduces the official code's regex pipeline (docs/official-masn.md, "The
tokeniser"), including its backslash-escaped ``\\?``, ``\\(`` and ``\\)`` tokens, which no GloVe
file contains; ``reference`` mode uses it so that released checkpoints see the tokens they were
trained on. ``clean`` (the default) is the same pipeline with plain ``?``, ``(`` and ``)`` tokens,
which GloVe knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from masn.errors import InvalidInput

QUESTION_WIDTH = 20  # tokens per question (official q_max_len)
PAD, UNK = 0, 1
PLACEHOLDERS = ("#START#", "UNK")  # ids 0 (also padding) and 1, as in the official vocabulary

_NOT_KEPT = re.compile(r"[^A-Za-z0-9(),!?'`_]")  # underscore kept, as officially
_CLITIC = re.compile(r"('s|'ve|n't|'re|'d|'ll)")
_SPACED = re.compile(r"([,!()?])")
_SPACES = re.compile(r"\s+")
_ESCAPED = frozenset("?()")

Tokeniser = Callable[[str], list[str]]


def clean_tokens(text: str) -> list[str]:
    """Lower-case words, clitics split off (``isn't`` -> ``is n't``), punctuation as tokens."""
    text = _NOT_KEPT.sub(" ", text)
    text = _CLITIC.sub(r" \1", text)
    text = _SPACED.sub(r" \1 ", text)
    return _SPACES.sub(" ", text).strip().lower().split()


def official_tokens(text: str) -> list[str]:
    """The official tokeniser: :func:`clean_tokens` with ``?``, ``(``, ``)`` backslash-escaped."""
    return [f"\\{token}" if token in _ESCAPED else token for token in clean_tokens(text)]


TOKENISERS: dict[str, Tokeniser] = {"clean": clean_tokens, "official": official_tokens}


def tokeniser(name: str) -> Tokeniser:
    if name not in TOKENISERS:
        raise InvalidInput(f"unknown tokeniser {name!r}; choose from {sorted(TOKENISERS)}")
    return TOKENISERS[name]


@dataclass(frozen=True)
class Vocabulary:
    """Words by id: 0 pads (``#START#``), 1 is ``UNK``, then words in order of first occurrence."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.words[: len(PLACEHOLDERS)] != PLACEHOLDERS:
            raise ValueError(f"a vocabulary starts with {PLACEHOLDERS}, got {self.words[:2]}")
        object.__setattr__(self, "_ids", {word: i for i, word in enumerate(self.words)})

    @classmethod
    def build(cls, texts: Iterable[str], tokenise: Tokeniser) -> Vocabulary:
        """Every word of ``texts`` (count threshold 0, like the official code)."""
        seen = dict.fromkeys(PLACEHOLDERS)
        for text in texts:
            seen.update(dict.fromkeys(tokenise(text)))
        return cls(tuple(seen))

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: Sequence[str]) -> list[int]:
        """Token ids; unknown words map to ``UNK``."""
        return [self._ids.get(token, UNK) for token in tokens]  # type: ignore[attr-defined]

    def encode(self, tokens: Sequence[str], width: int = QUESTION_WIDTH) -> tuple[np.ndarray, int]:
        """(width,) int64 ids, truncated to the first ``width`` and zero-padded, and the length.

        A question without any token becomes a single ``UNK`` (the network needs a word).
        """
        ids = self.ids(tokens)[:width] or [UNK]
        row = np.zeros(width, dtype=np.int64)
        row[: len(ids)] = ids
        return row, len(ids)
