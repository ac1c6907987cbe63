"""Trained models in Python: ``masn.load(run)`` and ``model.answer(video, question)``.

The same code as ``masn answer``, without the command line: a checkpoint (ours, or an
official one imported with ``masn model import-official``) is loaded once, then asked any
number of questions about videos given as files (extracted on the fly) or as features already
extracted (:func:`masn.extract_video`, or a record read from a store). :meth:`TrainedModel.figure`
draws the Figure-3 plot of an answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure

from masn.errors import MissingInput
from masn.extract.run.one_video import Extractor
from masn.extract.settings import ExtractionConfig
from masn.extract.show import frames_at
from masn.extract.store.schema import VideoRecord
from masn.pipeline.answering.answer import (
    EXTRACTED_WIDTHS,
    ModelAnswer,
    answer_record,
    answer_view,
    check_question,
    check_widths,
)
from masn.pipeline.answering.figure import answer_figure
from masn.pipeline.training.checkpoint import Predictor, load_predictor
from masn.runtime import resolve_device

BEST = "best.pt"  # the selected model in a run folder


@dataclass
class TrainedModel:
    """A trained MASN with its vocabulary, answer classes and frame settings, on a device."""

    predictor: Predictor = field(repr=False)
    device: torch.device

    @property
    def head(self) -> str:
        """open_ended, count or multiple_choice."""
        return self.predictor.spec.head

    @property
    def task(self) -> str:
        return self.predictor.spec.name

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer classes of an open-ended model (empty for the other heads)."""
        answers = self.predictor.answers
        return () if answers is None else answers.answers

    def answer(
        self,
        video: VideoRecord | str | os.PathLike[str],
        question: str,
        candidates: Sequence[str] | None = None,
        extractor: Extractor | None = None,
    ) -> ModelAnswer:
        """Answers ``question`` about ``video``: extracted features, or a video file, which
        ``extractor`` (default: the installed weights, on this model's device) extracts first.
        Multiple-choice models need ``candidates``."""
        chosen = list(candidates) if candidates is not None else None
        check_question(self.predictor, question, chosen)
        if not isinstance(video, VideoRecord):
            config = self.predictor.model.config
            check_widths(config, **EXTRACTED_WIDTHS, origin="masn extract")
            if extractor is None:
                extractor = Extractor.load(device=str(self.device))
            video = extractor.extract(video)
        return answer_record(self.predictor, video, question, chosen, self.device)

    def figure(
        self,
        record: VideoRecord,
        question: str,
        answer: ModelAnswer,
        fps: float | None = None,
        note: str = "",
    ) -> Figure:
        """The Figure-3 plot of ``answer``: attention maps over the question's words, alpha, the
        frames the model read with their boxes (when ``record``'s video file is still there;
        ``fps``: the rate it was sampled at, by default the extraction default) and the top
        answers. ``note``: a warning line under the question."""
        frames = None
        if Path(record.path).is_file() and record.frame_times is not None:
            rate = ExtractionConfig().fps if fps is None else fps
            frames = frames_at(record.path, record.frame_times[answer.chosen], rate, "pyav")
        names = self.predictor.model.config.fusion_attentions
        return answer_figure(answer_view(question, answer, names, record, frames, note))


def load(path: str | os.PathLike[str], device: str = "auto") -> TrainedModel:
    """The model of a checkpoint file, or of a run folder's ``best.pt``, in eval mode on
    ``device`` (auto: CUDA if present)."""
    path = Path(path)
    if path.is_dir():
        if not (path / BEST).is_file():
            raise MissingInput(f"{path} has no {BEST}: pass a run folder of masn train or a .pt")
        path = path / BEST
    target = resolve_device(device)
    predictor = load_predictor(path)
    predictor.model.to(target).eval()
    return TrainedModel(predictor, target)
