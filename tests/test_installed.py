"""Converted weights installed for the extractor, and networks loading them strictly."""

from __future__ import annotations

import json

import pytest
import torch

from masn.extract.config import ExtractionConfig
from masn.extract.networks import FeatureNetworks
from masn.weights import commands, installed
from masn.weights.installed import ROLE_FILES, install, read_installed
from masn.weights.manifest import get


@pytest.fixture
def random_networks() -> FeatureNetworks:
    return FeatureNetworks.random(ExtractionConfig(), seed=3)


def _install_all(folder, networks: FeatureNetworks, monkeypatch, i3d="i3d-r50-nonlocal-32x2"):
    """Installs the three roles from fake published files whose 'conversion' is the random
    networks' own state dicts (the real converters are tested in test_weights_convert.py)."""
    modules = {
        "detector": networks.detector,
        "resnet152": networks.appearance,
        "i3d": networks.motion,
    }
    names = {"detector": "vg-frcnn-attr-10-100", "resnet152": "resnet152-imagenet-v1", "i3d": i3d}
    records = {}
    for role, name in names.items():
        source = folder / get(name).filename
        source.write_bytes(role.encode())
        monkeypatch.setattr(installed, "convert", lambda fmt, path, m=modules[role]: m.state_dict())
        records[role] = install(get(name), source, folder)
    return records


def test_install_writes_state_dict_and_provenance(tmp_path, random_networks, monkeypatch):
    records = _install_all(tmp_path, random_networks, monkeypatch)
    for role, file in ROLE_FILES.items():
        assert (tmp_path / file).is_file()
        meta = json.loads((tmp_path / f"{role}.json").read_text())
        assert meta["sha256"] == installed.sha256_of(tmp_path / records[role].filename)
    state, record = read_installed(tmp_path, "i3d")
    assert record.layout == "nonlocal" and record.source == "i3d-r50-nonlocal-32x2"
    for key, tensor in random_networks.motion.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert not list(tmp_path.glob(".*.tmp"))


def test_networks_load_installed_weights_strictly(tmp_path, random_networks, monkeypatch):
    _install_all(tmp_path, random_networks, monkeypatch)
    loaded = FeatureNetworks.load(ExtractionConfig(), tmp_path)
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.weights["detector"].startswith("vg-frcnn-attr-10-100 (")
    assert "sha256" in loaded.weights["i3d"]


def test_an_i3d_of_the_other_layout_is_refused_with_advice(tmp_path, random_networks, monkeypatch):
    _install_all(tmp_path, random_networks, monkeypatch, i3d="i3d-r50-pytorchvideo-8x8")
    with pytest.raises(ValueError, match="--i3d pytorchvideo"):
        FeatureNetworks.load(ExtractionConfig(i3d="nonlocal"), tmp_path)


def test_missing_weights_tell_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make weights.*--random-weights"):
        FeatureNetworks.load(ExtractionConfig(), tmp_path)


def test_fetch_command_installs_what_it_downloaded(tmp_path, monkeypatch, random_networks):
    entry = get("resnet152-imagenet-v1")
    source = tmp_path / entry.filename
    source.write_bytes(b"published bytes")
    monkeypatch.setattr(commands, "fetch", lambda e, cache, force: source)
    resnet = random_networks.appearance.state_dict()
    monkeypatch.setattr(installed, "convert", lambda fmt, path: resnet)
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    state, record = read_installed(tmp_path, "resnet152")
    assert record.sha256 == installed.sha256_of(source) and len(state) > 900
