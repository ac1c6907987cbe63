"""Converted weights installed for the extractor, and networks loading them strictly."""

from __future__ import annotations

import json

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.settings import ExtractionConfig
from masn.weights import commands, installed
from masn.weights.download import Verification, file_sha256
from masn.weights.installed import ROLE_FILES, install, read_installed
from masn.weights.manifest import get


@pytest.fixture
def random_networks() -> FeatureNetworks:
    return FeatureNetworks.random(ExtractionConfig(), seed=3)


def _install_all(folder, networks: FeatureNetworks, i3d="i3d-r50-nonlocal-32x2"):
    """Installs the three roles from fake published files whose 'conversion' (what validation
    read) is the random networks' own state dicts (the real converters are tested in
    test_weights_convert.py)."""
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
        verified = Verification(
            source,
            file_sha256(source),
            source.stat().st_size,
            "recorded",
            modules[role].state_dict(),
        )
        records[role] = install(get(name), verified, folder)
    return records


def test_install_writes_state_dict_and_provenance(tmp_path, random_networks):
    records = _install_all(tmp_path, random_networks)
    for role, file in ROLE_FILES.items():
        assert (tmp_path / file).is_file()
        meta = json.loads((tmp_path / f"{role}.json").read_text())
        assert meta["sha256"] == file_sha256(tmp_path / records[role].filename)
    state, record = read_installed(tmp_path, "i3d")
    assert record.layout == "nonlocal" and record.source == "i3d-r50-nonlocal-32x2"
    for key, tensor in random_networks.motion.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert not list(tmp_path.glob(".*.tmp"))


def test_networks_load_installed_weights_strictly(tmp_path, random_networks):
    _install_all(tmp_path, random_networks)
    loaded = FeatureNetworks.load(ExtractionConfig(), tmp_path)
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.weights["detector"].startswith("vg-frcnn-attr-10-100 (")
    assert "sha256" in loaded.weights["i3d"]


def test_an_i3d_of_the_other_layout_is_refused_with_advice(tmp_path, random_networks):
    _install_all(tmp_path, random_networks, i3d="i3d-r50-pytorchvideo-8x8")
    with pytest.raises(ValueError, match="--i3d pytorchvideo"):
        FeatureNetworks.load(ExtractionConfig(i3d="nonlocal"), tmp_path)


def test_missing_weights_tell_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make weights.*--random-weights"):
        FeatureNetworks.load(ExtractionConfig(), tmp_path)


def test_fetch_command_installs_what_it_downloaded(tmp_path, monkeypatch, random_networks):
    """What validation read is installed as it is: the file is neither converted nor hashed
    again; a file the lock vouched for (not read by validation) is converted."""
    entry = get("resnet152-imagenet-v1")
    source = tmp_path / entry.filename
    source.write_bytes(b"published bytes")
    resnet = random_networks.appearance.state_dict()
    sha256 = file_sha256(source)
    verified = Verification(source, sha256, source.stat().st_size, "sha256 prefix", resnet)
    monkeypatch.setattr(commands, "fetch", lambda e, cache, force: verified)
    monkeypatch.setattr(installed, "convert", None)  # calling it would fail
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    state, record = read_installed(tmp_path, "resnet152")
    assert record.sha256 == sha256 and len(state) > 900
    vouched = Verification(source, sha256, source.stat().st_size, "lock file")
    monkeypatch.setattr(commands, "fetch", lambda e, cache, force: vouched)
    monkeypatch.setattr(installed, "convert", lambda fmt, path: resnet)
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    assert len(read_installed(tmp_path, "resnet152")[0]) == len(state)
