"""The settings of `masn answer`, torch-free (the command line builds its flags from them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from tyro.conf import Positional, arg

from masn.errors import InvalidInput
from masn.extract.settings import Decoder, ExtractionConfig, ExtractSettings
from masn.runtime import check_device
from masn.settings import Checked, Decided

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerSettings(Checked):
    """Ask a trained model a question about one video: top answers and the attention figure.

    Extracts the video's features on the fly, answers QUESTION with the checkpoint's model,
    prints the top-5 answers with their scores as JSON and draws the fusion attention maps,
    alpha and the sampled frames (like Figure 3 of the paper). The video is extracted as the
    model's training features were (the networks and settings its checkpoint records) unless
    extraction flags, --weights or --random-weights say otherwise.
    """

    video: Positional[Annotated[Path, arg(metavar="VIDEO")]]
    """The video file."""
    question: Positional[Annotated[str, arg(metavar="QUESTION")]]
    """The question, e.g. "what is the man doing?"."""
    checkpoint: Path
    """A run folder of masn train (its best.pt is read) or a checkpoint file."""
    out: Decided[Path | None] = None
    """Figure PNG (default: RUN/answers/<video stem>.answer.png, beside the checkpoint)."""
    candidates: tuple[str, ...] | None = None
    """Multiple-choice models: the candidate answers."""
    weights: Decided[Path | None] = None
    """Folder of the converted weights (default: the weights cache; `masn weights fetch`)."""
    random_weights: bool = False
    """Random networks, for smoke runs only: features and answers are meaningless."""
    seed: int = 0
    """Seed of the random networks (--random-weights)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    decoder: Decoder = "pyav"
    """pyav or decord."""
    features: ExtractionConfig = field(default_factory=ExtractionConfig)

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if self.weights is not None and self.random_weights:
            raise InvalidInput("pass either --weights DIR or --random-weights, not both")


EXTRACTION_SETTINGS = ("features", "weights", "random_weights", "seed")
"""What a store's settings record tells masn answer: how the store's features were extracted."""


def from_extract_record(data: dict[str, Any]) -> dict[str, Any] | None:
    """A feature store's settings record (what ``masn extract`` wrote it with: YAML of
    ``FeatureStore(path).provenance.settings``) as ``masn answer`` settings, so that ``--config``
    takes it: its extraction settings apply (``EXTRACTION_SETTINGS`` and the decoder), the rest
    (where the videos and the store are, how the run went) is left out with a note. None when
    ``data`` is not such a record."""
    extract_only = {f.name for f in fields(ExtractSettings)} - {
        f.name for f in fields(AnswerSettings)
    }
    if not extract_only & data.keys():
        return None
    kept = {name: data[name] for name in EXTRACTION_SETTINGS if name in data}
    run = data.get("run")
    if isinstance(run, Mapping) and "decoder" in run:
        kept["decoder"] = run["decoder"]
    left = sorted(set(data) - set(kept))
    log.info(
        "the config is a feature store's settings record (masn extract): its extraction settings "
        "apply; left out: %s",
        ", ".join(left),
    )
    return kept
