"""The extraction networks with their weights: installed weights loaded strictly (those of the
asked network only), clear advice when they are missing, and random weights announced."""

from __future__ import annotations

import logging

import pytest
import torch

from masn import caller
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
    assert "sha256" in loaded.weights["motion"]
    assert loaded.widths == {
        "appearance": 2048,
        "appearance_objects": 2048,
        "motion": 2048,
        "motion_objects": 2048,
    }


def test_only_the_weights_of_the_asked_network_are_loaded(tmp_path, random_networks):
    install_all(tmp_path, random_networks, motion="i3d-r50-pytorchvideo-8x8")
    assert (tmp_path / "motion-pytorchvideo.pt").is_file()
    with pytest.raises(FileNotFoundError, match="no converted weights of the motion network "):
        FeatureNetworks.load(ExtractionConfig(motion="nonlocal"), tmp_path)


def test_missing_weights_tell_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"masn weights fetch.*random_weights=True for a"):
        FeatureNetworks.load(ExtractionConfig(), tmp_path)


def test_load_networks_random_or_installed(tmp_path, monkeypatch, caplog, random_networks):
    """One loader for `masn extract` and `masn answer`: random weights with the banner (and
    never together with a weights folder), else the installed ones, by default the cache's."""
    config = ExtractionConfig()
    with caplog.at_level(logging.WARNING), caller.command_line():
        networks = load_networks(config, None, random_weights=True, seed=3)
    assert "RANDOM WEIGHTS" in caplog.text and "masn weights fetch" in caplog.text
    assert networks.weights["motion"] == "random (seed 3)"
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(networks.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="either weights or random_weights=True, not both"):
        load_networks(config, tmp_path, random_weights=True)
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"cache has no converted weights of the detector"):
        load_networks(config, None)
