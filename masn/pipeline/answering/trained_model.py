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

from masn.extract.networks.feature_networks import feature_widths
from masn.extract.run.one_video import Extractor
from masn.extract.settings import ExtractionConfig
from masn.extract.show import frames_at
from masn.extract.store.schema import VideoRecord
from masn.pipeline.answering.answer import (
    RANDOM_NOTE,
    ModelAnswer,
    answer_record,
    answer_view,
    check_features,
    check_question,
    check_widths,
)
from masn.pipeline.answering.figure import answer_figure
from masn.pipeline.training.checkpoint import Predictor, load_predictor
from masn.runtime import resolve_device

PYTHON_FIX = "extract the video with model.extractor(), which makes features like the training ones"


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

    def extractor(self, weights: str | os.PathLike[str] | None = None) -> Extractor:
        """Networks on this model's device that extract videos as its training features were
        (their settings, and their random networks where those were random; else the weights
        installed in ``weights``, default the cache). Where the checkpoint does not say (e.g.
        an imported official one): the paper's networks with the installed weights."""
        trained = self.predictor.features
        if trained is None:
            return Extractor.load(weights, device=str(self.device))
        return Extractor.like(trained, weights, device=str(self.device))

    def answer(
        self,
        video: VideoRecord | str | os.PathLike[str],
        question: str,
        candidates: Sequence[str] | None = None,
        extractor: Extractor | None = None,
    ) -> ModelAnswer:
        """Answers ``question`` about ``video``: extracted features, or a video file, which
        ``extractor`` extracts first (default: :meth:`extractor`). Multiple-choice models need
        ``candidates``.

        Features made otherwise than the model's training features (other sizes, rates,
        networks or published weights) are refused in one line, as the answer would mean
        nothing; random networks on one side only warn (``answer.check_features``)."""
        chosen = list(candidates) if candidates is not None else None
        check_question(self.predictor, question, chosen)
        if not isinstance(video, VideoRecord):
            trained = self.predictor.features
            if extractor is not None:
                config = extractor.config
            else:  # what self.extractor() makes, checked before its networks are loaded
                config = ExtractionConfig() if trained is None else trained.extraction_config()
            widths = feature_widths(config)
            check_widths(self.predictor.model.config, widths, "the extraction networks")
            extractor = self.extractor() if extractor is None else extractor
            given = extractor.provenance
            check_features(self.predictor.features, given, "the extractor's features", PYTHON_FIX)
            video = extractor.extract(video)
            return answer_record(self.predictor, video, question, chosen, self.device, fix=None)
        return answer_record(self.predictor, video, question, chosen, self.device, PYTHON_FIX)

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
        ``fps``: the rate it was sampled at, by default the record's) and the top answers.
        ``note``: a warning line under the question; features of random networks always carry
        the RANDOM WEIGHTS note."""
        frames = None
        provenance = record.provenance
        if Path(record.path).is_file() and record.frame_times is not None:
            if fps is None:
                fps = provenance.config.get("fps") if provenance is not None else None
            rate = ExtractionConfig().fps if fps is None else fps
            frames = frames_at(record.path, record.frame_times[answer.chosen], rate, "pyav")
        random = provenance is not None and provenance.random_seed() is not None
        if random and RANDOM_NOTE not in note:
            note = f"{RANDOM_NOTE}; {note}" if note else RANDOM_NOTE
        names = self.predictor.model.config.fusion_attentions
        return answer_figure(answer_view(question, answer, names, record, frames, note))


def load(path: str | os.PathLike[str], device: str = "auto") -> TrainedModel:
    """The model of a checkpoint file, or of a run folder's ``best.pt``, in eval mode on
    ``device`` (auto: CUDA if present)."""
    target = resolve_device(device)
    predictor = load_predictor(path)
    predictor.model.to(target).eval()
    return TrainedModel(predictor, target)
