"""Our checkpoint files: a plain dict of tensors, strings and numbers, written atomically.

A checkpoint holds everything needed to answer questions without the training data: the model
configuration and weights (GloVe rows included), the vocabulary, the answer classes, the
tokeniser and the frame settings. Training checkpoints (``last.pt``) add the optimizer, the
random-number state and the loop position. Files load with ``torch.load(weights_only=True)``:
no code runs when a checkpoint is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from masn import atomic
from masn.datasets import task_spec
from masn.datasets.annotations import QARow
from masn.datasets.spec import TaskSpec
from masn.errors import InvalidInput, MissingInput, root_cause
from masn.extract.store.schema import Provenance
from masn.model import MASN, MASNConfig
from masn.pipeline.qa.answer_set import AnswerSet, OutOfSet
from masn.pipeline.qa.questions import FeatureSource, Questions, attach_features, encode_questions
from masn.pipeline.qa.text import Vocabulary, tokeniser
from masn.pipeline.training.settings import BEST

FORMAT = "masn-checkpoint"
VERSION = 1


def save_atomic(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes ``payload`` to ``path`` so that a crash leaves the old file or the new, never half;
    a full disk is one line naming the file and its size (``masn.errors.DiskFull``)."""
    with atomic.replacing(path, _tensor_bytes(payload)) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in nested dicts and lists (most of a checkpoint's size)."""
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint ``path`` names: the file itself, or a run folder's ``best.pt``. Every
    command that reads a checkpoint and ``masn.load`` resolve it here, so each takes either."""
    path = Path(path)
    if path.is_dir():
        if not (path / BEST).is_file():
            raise MissingInput(
                f"{path} has no {BEST}: give a run folder of masn train or a checkpoint (.pt)"
            )
        return path / BEST
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint written by ``masn train`` (tensors only are rebuilt; nothing executes), from
    its file or its run folder (:func:`checkpoint_file`)."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise MissingInput(f"no checkpoint at {path} (masn train writes RUN/best.pt)")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path} is empty (0 bytes), not a masn checkpoint; copy it again")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # a damaged pickle fails anywhere (even MemoryError): not ours
        raise InvalidInput(
            f"{path} is not a readable masn checkpoint ({root_cause(error)}); "
            "an official checkpoint of the authors becomes one with `masn model import-official`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a masn checkpoint (no format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise InvalidInput(f"{path} has checkpoint version {payload.get('version')}, not {VERSION}")
    return payload


@dataclass
class Predictor:
    """A trained model with what it needs to read questions and name answers."""

    model: MASN
    spec: TaskSpec
    vocabulary: Vocabulary
    answers: AnswerSet | None
    tokenizer: str
    frames: int
    sampling: str
    info: dict[str, Any]

    @property
    def features(self) -> Provenance | None:
        """The provenance of the feature store the model was trained on, when the checkpoint
        records it and the features were extracted here (not imported official ones)."""
        recorded = self.info.get("features")
        if recorded is None:
            return None
        provenance = Provenance.stored(recorded["config"], recorded["weights"], "")
        try:
            provenance.extraction_config()
        except InvalidInput:
            return None
        return provenance

    def questions(
        self, rows: list[QARow], source: FeatureSource, split: str, policy: OutOfSet = "wrong"
    ) -> Questions:
        """``rows`` as this model reads them (its vocabulary, tokeniser and answer classes), each
        pointed at its video in ``source``; questions without features are left out (logged)."""
        tokenise = tokeniser(self.tokenizer)
        encoded = encode_questions(rows, self.spec, self.vocabulary, tokenise, self.answers, policy)
        return attach_features(encoded, source, split)


def model_payload(
    model: MASN,
    spec: TaskSpec,
    vocabulary: Vocabulary,
    answers: AnswerSet | None,
    tokenizer: str,
    frames: int,
    sampling: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    """The checkpoint dict of a model (``info``: JSON-like run facts, e.g. epoch and metrics)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": spec.name,
        "head": spec.head,
        "qtypes": list(spec.qtypes),
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "vocabulary": list(vocabulary.words),
        "answers": list(answers.answers) if answers is not None else [],
        "tokenizer": tokenizer,
        "frames": frames,
        "sampling": sampling,
        "info": info,
    }


def load_predictor(path: str | os.PathLike[str]) -> Predictor:
    """The model of a checkpoint (its file or its run folder), in eval mode on the CPU."""
    payload = load_checkpoint(path)
    model = MASN(MASNConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    answers = payload["answers"]
    return Predictor(
        model.eval(),
        replace(task_spec(payload["task"], payload["head"]), qtypes=tuple(payload["qtypes"])),
        Vocabulary(tuple(payload["vocabulary"])),
        AnswerSet(tuple(answers)) if answers else None,
        payload["tokenizer"],
        int(payload["frames"]),
        payload["sampling"],
        payload["info"],
    )
