"""Features of one video, as notebooks and `masn answer` want them: `masn extract` on one file.

:class:`Extractor` holds the three networks on their device, so that a notebook extracting many
videos loads them once; :func:`extract_video` is the one-call form. Both run the very pipeline
of ``masn extract`` (decoding, sampling, batching, the failure rules) into a temporary store and
read the video back, boxes, labels and frame times included.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from masn.errors import InvalidInput
from masn.extract.networks.feature_networks import RANDOM_SEED, FeatureNetworks, load_networks
from masn.extract.run.runner import extract_features
from masn.extract.settings import Decoder, ExtractionConfig, RunOptions, check_decoder
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import Provenance, VideoRecord
from masn.extract.video.decode import check_video_file
from masn.extract.video.sources import VideoSource
from masn.runtime import resolve_device

log = logging.getLogger(__name__)

BATCH_SIZE = 8  # sampled frames per network batch


@dataclass
class Extractor:
    """The extraction networks on a device, ready to extract video after video.

    Build it with :meth:`load`; ``networks.config`` says what the features are.
    """

    networks: FeatureNetworks
    device: torch.device
    decoder: Decoder = "pyav"

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike[str] | None = None,
        *,
        random_weights: bool = False,
        seed: int = RANDOM_SEED,
        device: str = "auto",
        config: ExtractionConfig | None = None,
        decoder: Decoder = "pyav",
    ) -> Extractor:
        """The networks of ``config`` (default: the paper's settings) with the converted weights
        installed in ``weights`` (None: the weights cache, filled by ``masn weights fetch``), or
        random ones seeded by ``seed`` with ``random_weights`` (for smoke runs: meaningless).
        ``device``: auto (CUDA if present), cpu, cuda or cuda:N."""
        config = ExtractionConfig() if config is None else config
        return cls._on(device, decoder, config, weights, random_weights, seed)

    @classmethod
    def _on(
        cls,
        device: str,
        decoder: Decoder,
        config: ExtractionConfig,
        weights: str | os.PathLike[str] | None,
        random_weights: bool,
        seed: int,
        cause: str = "",
    ) -> Extractor:
        """``load_networks`` on ``device`` (``cause``: why random networks, see there)."""
        check_decoder(decoder)
        target = resolve_device(device)
        networks = load_networks(config, weights, random_weights, seed, cause)
        return cls(networks.to_device(target), target, decoder)

    @classmethod
    def like(
        cls,
        provenance: Provenance,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        decoder: Decoder = "pyav",
        config: ExtractionConfig | None = None,
    ) -> Extractor:
        """Networks that extract videos as a store with this ``provenance`` was made: its
        settings (or ``config``), and its random networks where its features came from random
        ones (else the weights installed in ``weights``, default the cache)."""
        seed = provenance.random_seed()
        config = provenance.extraction_config() if config is None else config
        if seed is None:
            return cls._on(device, decoder, config, weights, False, RANDOM_SEED)
        cause = f"the features are extracted like ones made by random networks (seed {seed})"
        return cls._on(device, decoder, config, None, True, seed, cause)

    @property
    def config(self) -> ExtractionConfig:
        return self.networks.config

    @property
    def provenance(self) -> Provenance:
        """What the features it extracts are: its settings and the weights of its networks."""
        return Provenance.new(self.config.to_dict(), self.networks.weights)

    def extract(self, video: str | os.PathLike[str]) -> VideoRecord:
        """The features of ``video``: every field of a stored video, keyed by its file name."""
        video = Path(video)
        check_video_file(video)
        source = VideoSource(video.name or "video", video.resolve())
        # On a GPU one process decodes while the networks run; on a CPU it would steal cores.
        workers = 1 if self.device.type == "cuda" else 0
        options = RunOptions(str(self.device), BATCH_SIZE, workers, self.decoder)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="masn-video-") as folder:
            store = Path(folder) / "video.h5"
            summary = extract_features([source], store, self.config, self.networks, options)
            if not summary.stored:
                raise InvalidInput(f"cannot read the video {video}: {_failure(summary.failures)}")
            with FeatureStore(summary.store) as features:
                record = features.read(source.key)
        log.info(
            "extracted %d sampled frames of %s in %.1f s",
            summary.sampled_frames,
            video,
            time.perf_counter() - started,
        )
        return record


def extract_video(
    video: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    random_weights: bool = False,
    seed: int = RANDOM_SEED,
    device: str = "auto",
    config: ExtractionConfig | None = None,
    decoder: Decoder = "pyav",
) -> VideoRecord:
    """The features of one video with freshly loaded networks (see :meth:`Extractor.load` for
    the options; keep an :class:`Extractor` to extract several videos)."""
    extractor = Extractor.load(
        weights,
        random_weights=random_weights,
        seed=seed,
        device=device,
        config=config,
        decoder=decoder,
    )
    return extractor.extract(video)


def _failure(failures: Path) -> str:
    """The recorded reason of the last failed video, or a generic one."""
    lines = failures.read_text().splitlines() if failures.is_file() else []
    return json.loads(lines[-1])["reason"] if lines else "no frames were decoded"
