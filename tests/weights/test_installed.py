"""Converted weights installed for the extractor: state dicts and their provenance, written
atomically; fetch installs what validation read (loading them: test_feature_networks.py)."""

from __future__ import annotations

import json

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.settings import ExtractionConfig
from masn.weights import commands, installed
from masn.weights.installed import ROLE_FILES, read_installed
from masn.weights.manifest import get
from masn.weights.verification import Verification, file_sha256
from tests.weights.fake_installs import install_all


@pytest.fixture(scope="module")
def random_networks() -> FeatureNetworks:
    return FeatureNetworks.random(ExtractionConfig(), seed=3)


def test_install_writes_state_dict_and_provenance(tmp_path, random_networks):
    records = install_all(tmp_path, random_networks)
    for role, file in ROLE_FILES.items():
        assert (tmp_path / file).is_file()
        meta = json.loads((tmp_path / f"{role}.json").read_text())
        assert meta["sha256"] == file_sha256(tmp_path / records[role].filename)
    state, record = read_installed(tmp_path, "i3d")
    assert record.layout == "nonlocal" and record.source == "i3d-r50-nonlocal-32x2"
    for key, tensor in random_networks.motion.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert not list(tmp_path.glob(".*.tmp"))


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
