"""The answering tests' shared inputs: small checkpoints of each head and the sample video's
features, extracted once (CPU extraction is slow: about 5 s per sampled frame)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.run.one_video import Extractor
from masn.extract.store.schema import VideoRecord
from masn.pipeline.training.checkpoint import Predictor, load_predictor
from tests.builders import COARSE_EXTRACTION, SAMPLE_VIDEO, make_checkpoint

HEADS = ("open_ended", "count", "multiple_choice")


@pytest.fixture(scope="package")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("answer")


@pytest.fixture(scope="package")
def checkpoints(folder: Path) -> dict[str, Path]:
    return {head: make_checkpoint(folder, head) for head in HEADS}


@pytest.fixture(scope="package")
def predictors(checkpoints: dict[str, Path]) -> dict[str, Predictor]:
    return {head: load_predictor(path) for head, path in checkpoints.items()}


@pytest.fixture(scope="package")
def record() -> VideoRecord:
    """The sample video's features with random networks, every 12th 6-fps frame (3 frames)."""
    networks = FeatureNetworks.random(COARSE_EXTRACTION)
    return Extractor(networks, torch.device("cpu")).extract(SAMPLE_VIDEO)
