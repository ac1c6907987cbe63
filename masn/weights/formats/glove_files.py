"""The ``glove_text`` and ``glove_zip`` formats: GloVe word vectors as published.

Validated before a file is trusted, never converted: the pipeline reads the rows of its
vocabulary from the file itself (:func:`masn.weights.glove.load_glove_rows`).
"""

from __future__ import annotations

from pathlib import Path

from masn.weights.formats.registry import weights_format
from masn.weights.glove import GloveFile, check_glove_file


@weights_format("glove_text", role="glove", installed=False)
def check_glove_text(path: Path) -> GloveFile:
    """A GloVe text file: a word and its numbers a line, the same count on every line."""
    return check_glove_file(path)


@weights_format("glove_zip", role="glove", installed=False)
def check_glove_zip(path: Path) -> GloveFile:
    """A zip archive holding exactly one GloVe text file (glove.42B.300d.zip)."""
    return check_glove_file(path, zipped=True)
