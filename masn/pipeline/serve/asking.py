"""The Ask view's work: a run's model asked about a stored video or an uploaded clip.

Everything goes through the public API: ``masn.load(...)`` gives the run's model, a stored
video is the store's record, an upload is extracted by a :class:`masn.Extractor` with the
store's extraction settings, and ``TrainedModel.answer`` answers. The page therefore shows the
very numbers ``masn.load(run).answer(record, question)`` and ``masn answer`` give; it also
carries them as the JSON ``masn answer`` prints (scores and alpha rounded alike).

Uploads are extracted with the installed weights (``masn weights fetch``), or with random
networks when the store's features come from random networks or no weights are installed: the
page then says so in the random-weights banner.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

from masn import settings as settings_files
from masn.errors import InvalidInput, UserError
from masn.extract.networks.feature_networks import RANDOM_SEED
from masn.extract.run.one_video import Extractor
from masn.extract.settings import ExtractionConfig
from masn.extract.show import frames_at
from masn.extract.store.schema import VideoRecord
from masn.pipeline.answering.answer import (
    RANDOM_NOTE,
    ModelAnswer,
    answer_summary,
    answer_view,
    check_question,
)
from masn.pipeline.answering.figure import TITLES, shown_maps
from masn.pipeline.answering.trained_model import TrainedModel, load
from masn.pipeline.serve.catalogue import Catalogue, encode_jpeg
from masn.pipeline.serve.runs import Run

log = logging.getLogger(__name__)

COLOURMAP = "viridis"


@dataclass(frozen=True)
class MapCell:
    """One cell of an attention map: its weight and its colours."""

    value: float
    colour: str
    ink: str


@dataclass(frozen=True)
class AttentionMap:
    """One fusion attention map over the question's words (appearance words, then motion)."""

    name: str
    title: str
    alpha: float | None
    labels: list[tuple[str, str]]  # (stream, word) per row and column
    cells: list[list[MapCell]]


@dataclass(frozen=True)
class Answered:
    """A model's answer with its attention maps and the JSON `masn answer` prints for it."""

    answer: ModelAnswer
    maps: list[AttentionMap]
    summary: dict[str, Any]


def attention_maps(model: TrainedModel, answer: ModelAnswer, question: str) -> list[AttentionMap]:
    """The fusion attention maps of ``answer`` over the real question words, in alpha order, as
    the Figure-3 plot shows them (one colour scale for all maps)."""
    names = model.predictor.model.config.fusion_attentions
    view = answer_view(question, answer, names, VideoRecord(key=""), None)
    blocks = shown_maps(view)
    if not blocks:
        return []
    top = max(float(block.max()) for _, block, _ in blocks) or 1.0
    colours = matplotlib.colormaps[COLOURMAP]
    labels = [("A", word) for word in answer.words] + [("M", word) for word in answer.words]
    maps = []
    for name, block, weight in blocks:
        cells = []
        for row in block:
            line = []
            for value in row:
                red, green, blue, _ = colours(float(value) / top)
                light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
                colour = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
                line.append(MapCell(float(value), colour, "#000" if light else "#fff"))
            cells.append(line)
        maps.append(AttentionMap(name, TITLES.get(name, name), weight, labels, cells))
    return maps


class Asker:
    """The runs' models (loaded on first use) and the extractor of uploads."""

    def __init__(
        self,
        catalogue: Catalogue,
        weights: Path | None,
        device: str,
        decoder: str,
        question_threads: int | None = None,
    ):
        """``question_threads``: torch's CPU threads while questions are answered (None: leave
        torch's setting); the extraction of an upload, one at a time, gets them all."""
        self.catalogue = catalogue
        self.weights, self.device, self.decoder = weights, device, decoder
        self._threads = self._question_threads = torch.get_num_threads()
        if question_threads is not None:
            self._question_threads = question_threads
            torch.set_num_threads(question_threads)
        self._models: dict[Path, TrainedModel] = {}
        self._lock = threading.Lock()
        self._extraction_lock = threading.Lock()
        self._extractor: tuple[tuple[Any, ...], Extractor, str] | None = None

    def model(self, run: Run) -> TrainedModel:
        """The run's model, loaded once."""
        if run.checkpoint is None:
            raise InvalidInput(f"run {run.name!r} has no checkpoint to ask (no best.pt)")
        with self._lock:
            if run.checkpoint not in self._models:
                self._models[run.checkpoint] = load(run.checkpoint, self.device)
            return self._models[run.checkpoint]

    def check(self, run: Run, question: str, candidates: list[str]) -> None:
        """Refuses a question the model cannot take, before any slow extraction."""
        check_question(self.model(run).predictor, question, candidates or None)

    def ask(self, run: Run, record: VideoRecord, question: str, candidates: list[str]) -> Answered:
        """``masn.load(run).answer(record, question, candidates)`` with its maps and summary."""
        model = self.model(run)
        answer = model.answer(record, question, candidates or None)
        maps = attention_maps(model, answer, question)
        return Answered(answer, maps, answer_summary(answer, record.key, record, candidates))

    def extractor(self) -> tuple[Extractor, str]:
        """The networks that extract uploads as the store's videos were (built once per store
        settings), and the banner their features need ("" for the published weights)."""
        provenance = self.catalogue.store().provenance
        try:
            config = provenance.extraction_config()
        except UserError as error:
            raise InvalidInput(
                f"uploads cannot be extracted like this store's videos: {error}"
            ) from None
        seed = provenance.random_seed()
        wanted = (settings_files.dump(config), seed)
        if self._extractor is not None and self._extractor[0] == wanted:
            return self._extractor[1], self._extractor[2]
        if seed is not None:
            extractor = Extractor.like(provenance, device=self.device, decoder=self.decoder)
            note = f"{RANDOM_NOTE} (the store's features come from random networks)"
        else:
            try:
                extractor = Extractor.load(
                    self.weights, device=self.device, config=config, decoder=self.decoder
                )
                note = ""
            except UserError as error:
                log.warning("uploads are extracted with random networks: %s", error)
                extractor = self._random(config, RANDOM_SEED)
                note = f"{RANDOM_NOTE} (no published weights: {error})"
        self._extractor = (wanted, extractor, note)
        return extractor, note

    def _random(self, config: ExtractionConfig, seed: int) -> Extractor:
        return Extractor.load(
            random_weights=True, seed=seed, device=self.device, config=config, decoder=self.decoder
        )

    def extract(self, path: Path) -> tuple[VideoRecord, np.ndarray | None, str]:
        """An uploaded video's record, its decoded sampled frames, and the banner."""
        with self._extraction_lock:  # one extraction at a time: each fills the CPU or GPU
            extractor, note = self.extractor()
            torch.set_num_threads(self._threads)
            try:
                record = extractor.extract(path)
            finally:
                torch.set_num_threads(self._question_threads)
            frames = None
            if record.frame_times is not None:
                frames = frames_at(path, record.frame_times, extractor.config.fps, self.decoder)
        return record, frames, note


def upload_images(frames: np.ndarray | None, chosen: np.ndarray) -> list[str]:
    """Data URIs of the chosen frames of an upload (its file is deleted after the request)."""
    if frames is None:
        return []
    return [
        "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(frames[i])).decode()
        for i in chosen
    ]
