"""The settings of `masn serve`, torch-free and web-library-free (the command line builds its
flags from them, and `masn serve --help` works without the serve extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from masn.errors import InvalidInput
from masn.extract.settings import Decoder
from masn.runtime import check_device
from masn.settings import Checked, Decided

MAX_PORT = 65535


@dataclass(frozen=True)
class ServeSettings(Checked):
    """Browse a feature store, ask trained models and compare runs in a local web app.

    Serves four pages on http://HOST:PORT/: the store's videos (paged and searchable; each
    video's sampled frames with the detector's boxes, labels and scores, the source video, the
    stream shapes and the store's settings record); Ask (a stored video or an uploaded clip, a
    question and optional candidates: the answer, the top answers, the fusion weights alpha,
    the attention maps over the question words and the frames used); each run's results
    (metrics, accuracy per question type, the most confused answers, a filterable table of the
    test questions); and a comparison of runs evaluated on the same questions. Needs the serve
    extra: pip install 'masn[serve]'. Nothing is fetched from the network.
    """

    store: Path
    """The feature store to browse (masn extract's .h5 file)."""
    run: tuple[Path, ...] = ()
    """Run folders of masn train (best.pt, evaluate-*/), evaluation folders of masn evaluate
    (metrics.json, predictions.jsonl) or checkpoints (.pt)."""
    annotations: Path | None = None
    """The runs' question folder (masn train's --annotations) when it is no longer where their
    evaluation recorded it; multiple-choice candidates are read from it."""
    host: str = "127.0.0.1"
    """Address to listen on; anything but a loopback address exposes the store and the models
    to the network."""
    port: int = 8000
    """Port to listen on (0: any free port; the printed URL names it)."""
    device: str = "auto"
    """Where the models and the extraction of uploads run: auto, cpu, cuda or cuda:N."""
    weights: Decided[Path | None] = None
    """Folder of the converted weights that extract uploaded videos (default: the weights
    cache; random networks, said on the page, when they are missing or the store's features
    come from random networks)."""
    decoder: Decoder = "pyav"
    """Video decoder for frames and uploads: pyav or decord."""
    upload_mb: int = 100
    """Largest upload accepted, in MB; larger ones are refused before anything is written."""
    upload_seconds: float = 60.0
    """Longest uploaded video accepted, in seconds (extraction takes seconds per sampled frame
    on a CPU)."""
    page_size: int = 50
    """Rows per page of the video list and the results tables."""

    def check(self) -> None:
        super().check()
        check_device(self.device)
        if not isinstance(self.port, int) or not 0 <= self.port <= MAX_PORT:
            raise InvalidInput(f"--port must lie in 0..{MAX_PORT}, got {self.port!r}")
        if not self.host:
            raise InvalidInput("--host must name an address, e.g. 127.0.0.1")
        if self.upload_mb < 1:
            raise InvalidInput(f"--upload-mb must be at least 1, got {self.upload_mb}")
        if not self.upload_seconds > 0:
            raise InvalidInput(f"--upload-seconds must be positive, got {self.upload_seconds}")
        if not 1 <= self.page_size <= 1000:
            raise InvalidInput(f"--page-size must lie in 1..1000, got {self.page_size}")
