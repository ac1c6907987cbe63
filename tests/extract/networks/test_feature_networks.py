"""The extraction networks with their weights: installed weights loaded strictly (the I3D of the
asked backbone only), clear advice when they are missing, and random weights announced."""

from __future__ import annotations

import logging

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks, load_networks
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
    with pytest.raises(FileNotFoundError, match=r"masn weights fetch.*--random-weights"):
        FeatureNetworks.load(ExtractionConfig(), tmp_path)


def test_load_networks_random_or_installed(tmp_path, monkeypatch, caplog, random_networks):
    """One loader for `masn extract` and `masn answer`: random weights with the banner (and
    never together with a weights folder), else the installed ones, by default the cache's."""
    config = ExtractionConfig()
    with caplog.at_level(logging.WARNING):
        networks = load_networks(config, None, random_weights=True, seed=3)
    assert "RANDOM WEIGHTS" in caplog.text and "masn weights fetch" in caplog.text
    assert networks.weights["i3d"] == "random (seed 3)"
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(networks.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="either converted --weights or --random-weights"):
        load_networks(config, tmp_path, random_weights=True)
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"cache has no converted detector weights"):
        load_networks(config, None)
