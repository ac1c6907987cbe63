"""The settings of `masn answer`, torch-free (the command line builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from tyro.conf import Positional, arg

from masn.errors import InvalidInput
from masn.extract.settings import Decoder, ExtractionConfig
from masn.runtime import check_device
from masn.settings import Checked


@dataclass(frozen=True)
class AnswerSettings(Checked):
    """Ask a trained model a question about one video: top answers and the attention figure.

    Extracts the video's features on the fly, answers QUESTION with the checkpoint's model,
    prints the top-5 answers with their scores as JSON and draws the fusion attention maps,
    alpha and the sampled frames (like Figure 3 of the paper). Extract with the settings the
    training features were made with (the defaults are the paper's).
    """

    video: Positional[Annotated[Path, arg(metavar="VIDEO")]]
    """The video file."""
    question: Positional[Annotated[str, arg(metavar="QUESTION")]]
    """The question, e.g. "what is the man doing?"."""
    checkpoint: Path
    """RUN/best.pt (written by masn train)."""
    out: Path | None = None
    """Figure PNG (default: ./<video stem>.answer.png)."""
    candidates: tuple[str, ...] | None = None
    """Multiple-choice models: the candidate answers."""
    weights: Path | None = None
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
