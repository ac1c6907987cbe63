"""Installing a set of networks' own (random) weights as if fetched, for loading tests."""

from __future__ import annotations

from pathlib import Path

from masn.extract.networks.feature_networks import FeatureNetworks
from masn.roles import ROLES
from masn.weights.installed import Installed, install
from masn.weights.manifest import get
from masn.weights.verification import Verification, file_sha256


def install_all(
    folder: Path, networks: FeatureNetworks, motion: str = "i3d-r50-nonlocal-32x2"
) -> dict[str, Installed]:
    """Installs the three roles from fake published files whose 'conversion' (what validation
    read) is the networks' own state dicts (the real converters are tested in
    tests/weights/formats)."""
    modules = {role: networks.get_submodule(role) for role in ROLES}
    names = {
        "detector": "vg-frcnn-attr-10-100",
        "appearance": "resnet152-imagenet-v1",
        "motion": motion,
    }
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
