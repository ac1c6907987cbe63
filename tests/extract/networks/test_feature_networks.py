"""The extraction networks with their weights: installed weights loaded strictly (the I3D of the
asked layout only), and clear advice when they are missing."""

from __future__ import annotations

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.settings import ExtractionConfig
from tests.weights.fake_installs import install_all


@pytest.fixture(scope="module")
def random_networks() -> FeatureNetworks:
    return FeatureNetworks.random(ExtractionConfig(), seed=3)


def test_networks_load_installed_weights_strictly(tmp_path, random_networks):
    install_all(tmp_path, random_networks)
    loaded = FeatureNetworks.load(ExtractionConfig(), tmp_path)
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.weights["detector"].startswith("vg-frcnn-attr-10-100 (")
    assert "sha256" in loaded.weights["i3d"]


def test_an_i3d_of_the_other_layout_is_refused_with_advice(tmp_path, random_networks):
    install_all(tmp_path, random_networks, i3d="i3d-r50-pytorchvideo-8x8")
    with pytest.raises(ValueError, match="--i3d pytorchvideo"):
        FeatureNetworks.load(ExtractionConfig(i3d="nonlocal"), tmp_path)


def test_missing_weights_tell_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make weights.*--random-weights"):
        FeatureNetworks.load(ExtractionConfig(), tmp_path)
