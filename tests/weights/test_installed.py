"""Converted weights installed for the extractor: state dicts and their provenance, written
atomically; fetch installs what validation read (loading them: test_feature_networks.py)."""

from __future__ import annotations

import json

import pytest
import torch

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.extract.settings import ExtractionConfig
from masn.roles import ROLES
from masn.weights import commands, installed
from masn.weights.installed import read_installed
from masn.weights.manifest import get
from masn.weights.verification import Verification, file_sha256
from tests.weights.fake_installs import install_all


@pytest.fixture(scope="module")
def random_networks() -> FeatureNetworks:
    return FeatureNetworks.random(ExtractionConfig(), seed=3)


def test_install_writes_state_dict_and_provenance(tmp_path, random_networks):
    records = install_all(tmp_path, random_networks)
    for role in ROLES:
        backbone = ExtractionConfig().backbone(role)
        assert (tmp_path / f"{role}-{backbone}.pt").is_file()
        meta = json.loads((tmp_path / f"{role}-{backbone}.json").read_text())
        assert meta["sha256"] == file_sha256(tmp_path / records[role].filename)
    state, record = read_installed(tmp_path, "motion", "nonlocal")
    assert record.backbone == "nonlocal" and record.source == "i3d-r50-nonlocal-32x2"
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
    state, record = read_installed(tmp_path, "appearance", "resnet152")
    assert record.sha256 == sha256 and len(state) > 900
    vouched = Verification(source, sha256, source.stat().st_size, "lock file")
    monkeypatch.setattr(commands, "fetch", lambda e, cache, force: vouched)
    monkeypatch.setattr(installed, "convert", lambda fmt, path: resnet)
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    assert len(read_installed(tmp_path, "appearance", "resnet152")[0]) == len(state)


def test_caches_written_before_the_roles_were_renamed_still_load(tmp_path, random_networks):
    """resnet152.pt, i3d.pt (its record's "layout" names the I3D) and detector.pt."""
    records = install_all(tmp_path, random_networks)
    legacy = {"detector": "detector", "appearance": "resnet152", "motion": "i3d"}
    for role, stem in legacy.items():
        backbone = records[role].backbone
        (tmp_path / f"{role}-{backbone}.pt").rename(tmp_path / f"{stem}.pt")
        meta = json.loads((tmp_path / f"{role}-{backbone}.json").read_text())
        del meta["backbone"]
        meta |= {"role": stem, "layout": "nonlocal" if role == "motion" else None}
        (tmp_path / f"{stem}.json").write_text(json.dumps(meta))
        (tmp_path / f"{role}-{backbone}.json").unlink()
    loaded = FeatureNetworks.load(ExtractionConfig(), tmp_path)
    assert loaded.weights["motion"].startswith("i3d-r50-nonlocal-32x2 (")
    for name, tensor in random_networks.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(FileNotFoundError, match="motion network pytorchvideo"):
        read_installed(tmp_path, "motion", "pytorchvideo")
