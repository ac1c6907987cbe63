"""The authors' trained models as ours: an official checkpoint and its vocabulary pickles become
a masn checkpoint that ``masn evaluate``, ``masn answer`` and ``masn.load`` read like any other.

The official code (ajseo95/MASN-pytorch) caches each task's vocabularies as pickles in its
``--vc_dir``: ``word_to_index``, ``index_to_word``, ``ans_to_index``, ``index_to_ans`` and
``vocab_embedding``, suffixed ``_<Task>`` for TGIF-QA (Count, FrameQA, Action, Trans) and bare
for MSVD-QA and MSRVTT-QA. They are read with the restricted unpickler (dicts, strings, numbers
and numpy arrays: nothing a file names is run), checked against one another and against the
checkpoint (word count = GloVe rows, answer count = output classes, the GloVe rows themselves
when ``vocab_embedding`` is there), and only then written, atomically, as one file. The model
runs in ``reference`` mode with the official tokeniser, as it was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masn.datasets import get_dataset, task_spec
from masn.errors import InvalidInput, MissingInput
from masn.model.official import load_official, read_official_checkpoint
from masn.pipeline.qa.answer_set import AnswerSet
from masn.pipeline.qa.text import PLACEHOLDERS, Vocabulary
from masn.pipeline.training.checkpoint import model_payload, save_atomic
from masn.pipeline.training.settings import ImportOfficialModelSettings
from masn.unpickle import load_pickle
from masn.weights.verification import file_sha256

log = logging.getLogger(__name__)

TOKENIZER = "official"  # the official regex pipeline, backslash-escaped "\?" included
SAMPLING = "first"  # the official loaders keep a video's first T frames


@dataclass(frozen=True)
class OfficialVocabulary:
    """The words by id, the answer classes by id (empty for count and multiple choice) and the
    GloVe rows (None when the folder has no ``vocab_embedding`` pickle)."""

    words: tuple[str, ...]
    answers: tuple[str, ...]
    embedding: np.ndarray | None


def vocabulary_file(folder: Path, kind: str, task: str) -> Path:
    """The official pickle of ``kind`` (e.g. ``word_to_index``) for our ``task`` name: suffixed
    with the official task name where the dataset has several tasks (TGIF-QA)."""
    spec = task_spec(task)
    several = len(get_dataset(spec.dataset).tasks) > 1
    return folder / f"{kind}{f'_{spec.official_name}' if several else ''}.pkl"


def read_official_vocabulary(folder: str | Path, task: str) -> OfficialVocabulary:
    """The vocabulary pickles of ``task`` in the official ``--vc_dir`` ``folder``, checked."""
    folder = Path(folder)
    head = task_spec(task).head
    words = _by_index(folder, task, "word_to_index", "index_to_word")
    if words[: len(PLACEHOLDERS)] != PLACEHOLDERS:
        path = vocabulary_file(folder, "index_to_word", task)
        raise InvalidInput(
            f"{path} does not start with {PLACEHOLDERS} (ids 0 and 1 of an official vocabulary)"
        )
    answers: tuple[str, ...] = ()
    if head == "open_ended":
        answers = _by_index(folder, task, "ans_to_index", "index_to_ans")
    embedding = None
    path = vocabulary_file(folder, "vocab_embedding", task)
    if path.is_file():
        embedding = np.asarray(load_pickle(path))
        if embedding.ndim != 2 or embedding.shape[0] != len(words):
            raise InvalidInput(
                f"{path} holds an array of shape {embedding.shape}, not one row per word of "
                f"the {len(words)}-word vocabulary"
            )
    return OfficialVocabulary(words, answers, embedding)


def _by_index(folder: Path, task: str, forward: str, backward: str) -> tuple[str, ...]:
    """The entries of a ``<thing>_to_index`` / ``index_to_<thing>`` pair, in id order; the two
    must be inverses with ids 0..n-1."""
    to_index = _read_dict(vocabulary_file(folder, forward, task))
    from_index = _read_dict(vocabulary_file(folder, backward, task))
    ids = sorted(from_index)
    if ids != list(range(len(ids))) or not all(isinstance(i, int) for i in ids):
        raise InvalidInput(
            f"{vocabulary_file(folder, backward, task)}: the ids are not 0..{len(ids) - 1}"
        )
    entries = tuple(str(from_index[i]) for i in ids)
    if {str(k): v for k, v in to_index.items()} != {entry: i for i, entry in enumerate(entries)}:
        raise InvalidInput(
            f"{vocabulary_file(folder, forward, task)} and {backward} disagree: they are not "
            "the two directions of one vocabulary"
        )
    return entries


def _read_dict(path: Path) -> Mapping[Any, Any]:
    if not path.is_file():
        raise MissingInput(
            f"no {path.name} in {path.parent}: pass the official --vc_dir folder of this task"
        )
    loaded = load_pickle(path)
    if not isinstance(loaded, Mapping) or not loaded:
        raise InvalidInput(f"{path} is not an official vocabulary (a non-empty dict)")
    return loaded


def import_official_checkpoint(settings: ImportOfficialModelSettings) -> Path:
    """Writes ``settings.out``: the official checkpoint and its vocabulary as a masn checkpoint."""
    task, spec = settings.task, task_spec(settings.task)
    official = spec.official_name
    state = read_official_checkpoint(settings.checkpoint)
    model = load_official(state, spec.head)
    vocabulary = read_official_vocabulary(settings.vocabulary, task)
    rows = model.config.vocab_size
    if len(vocabulary.words) != rows:
        raise InvalidInput(
            f"the vocabulary in {settings.vocabulary} has {len(vocabulary.words)} words but the "
            f"checkpoint {settings.checkpoint} has {rows} GloVe rows: not the vocabulary it was "
            "trained with"
        )
    glove = model.question.embedding.weight.detach().double().numpy()
    if vocabulary.embedding is not None and not np.allclose(
        vocabulary.embedding.astype(np.float64), glove, rtol=1e-5, atol=1e-6
    ):
        path = vocabulary_file(settings.vocabulary, "vocab_embedding", task)
        raise InvalidInput(
            f"the GloVe rows of {path} differ from the checkpoint's: not the vocabulary "
            f"{settings.checkpoint} was trained with"
        )
    answers = None
    if spec.head == "open_ended":
        if len(vocabulary.answers) != model.config.num_answers:
            raise InvalidInput(
                f"the vocabulary in {settings.vocabulary} has {len(vocabulary.answers)} answers "
                f"but the checkpoint scores {model.config.num_answers} classes"
            )
        answers = AnswerSet(vocabulary.answers)
    info = {
        "imported_from": str(settings.checkpoint),
        "checkpoint_sha256": file_sha256(Path(settings.checkpoint)),
        "vocabulary": str(settings.vocabulary),
        "official_task": official,
    }
    payload = model_payload(
        model, spec, Vocabulary(vocabulary.words), answers, TOKENIZER, spec.frames, SAMPLING, info
    )
    out = save_atomic(payload, settings.out)
    log.info(
        "wrote %s: the official %s model (%d words, %d answer classes), reference mode",
        out,
        official,
        rows,
        len(vocabulary.answers),
    )
    return out
