"""Converted weights, ready for the extractor: one state dict per network in the cache.

``masn weights fetch`` converts each verified network file into ``<cache>/<role>-<network>.pt``
(a plain state dict of our module, loaded with ``weights_only=True``) next to a ``.json`` that
records the published file it came from and that file's sha256: the provenance every feature
store keeps. Each network of a role has its own file, so several can be installed side by side
(``--appearance resnet152`` and ``--appearance clip-vit-b16``); the last file fetched for a
network is the one installed. Caches written before the roles were renamed hold
``resnet152.pt``, ``i3d.pt`` and ``detector.pt``; they are read as what they are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from masn import atomic
from masn.caller import option
from masn.errors import InvalidInput, MissingInput
from masn.roles import ROLES, Role
from masn.weights.formats.registry import convert, get_format
from masn.weights.formats.source_tensors import StateDict
from masn.weights.manifest import WeightEntry
from masn.weights.verification import Verification

log = logging.getLogger(__name__)

# Installed files of earlier caches: role -> (file stem, the network it holds when not recorded).
LEGACY_FILES: dict[Role, tuple[str, str | None]] = {
    "detector": ("detector", "vg-frcnn"),
    "appearance": ("resnet152", "resnet152"),
    "motion": ("i3d", None),  # the record's "layout" names the I3D
}


@dataclass(frozen=True)
class Installed:
    """Where a network's converted weights came from."""

    role: str
    backbone: str  # the network of the role the weights fill
    source: str  # manifest entry name
    filename: str
    format: str
    sha256: str  # of the published file

    def describe(self) -> str:
        return f"{self.source} ({self.filename}, sha256 {self.sha256})"


def installed_stem(role: str, backbone: str) -> str:
    """The file name, without suffix, of the installed weights of ``role`` network ``backbone``."""
    return f"{role}-{backbone}"


def install(entry: WeightEntry, verified: Verification, folder: Path) -> Installed:
    """Writes the converted weights of ``entry``'s verified file into the cache ``folder``: the
    state dict validation read, or (when the lock vouched for the file) a fresh conversion."""
    if entry.role not in ROLES:
        raise ValueError(f"{entry.name} ({entry.role}) is not a network of the extractor")
    state = convert(entry.format, verified.path) if verified.vouched else verified.content
    backbone = get_format(entry.format).backbone
    record = Installed(
        role=entry.role,
        backbone=backbone,
        source=entry.name,
        filename=entry.filename,
        format=entry.format,
        sha256=verified.sha256,
    )
    stem = installed_stem(entry.role, backbone)
    with atomic.replacing(folder / f"{stem}.pt") as temporary:
        torch.save(state, temporary)
    atomic.write_text(folder / f"{stem}.json", json.dumps(asdict(record), indent=2))
    log.info("installed %s as the %s network %s in %s", entry.name, entry.role, backbone, folder)
    return record


def find_installed(folder: Path, role: Role, backbone: str) -> tuple[Path, Installed] | None:
    """The weights file and record of ``role`` network ``backbone`` in ``folder``, if any."""
    stem = installed_stem(role, backbone)
    candidates = [(folder / f"{stem}.pt", folder / f"{stem}.json")]
    legacy, network = LEGACY_FILES[role]
    candidates.append((folder / f"{legacy}.pt", folder / f"{legacy}.json"))
    for weights, meta in candidates:
        if weights.is_file() and meta.is_file():
            record = _record(meta, role, network)
            if record.backbone == backbone:
                return weights, record
    return None


def read_installed(folder: Path, role: Role, backbone: str) -> tuple[StateDict, Installed]:
    """The converted state dict of ``role`` network ``backbone`` and its provenance."""
    found = find_installed(folder, role, backbone)
    if found is None:
        raise MissingInput(
            f"{folder} has no converted weights of the {role} network {backbone}: run `masn "
            "weights fetch` (the paper's networks; `masn weights list` names the others), or "
            f"pass {option('random_weights', True)} for a smoke run"
        )
    weights, record = found
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return state, record


def _record(meta: Path, role: Role, network: str | None) -> Installed:
    try:
        values: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        if "backbone" not in values:  # written before the roles were renamed
            values["backbone"] = network or values.pop("layout")
            values.pop("layout", None)
            values["role"] = role
        return Installed(**values)
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidInput(
            f"{meta} is damaged ({error}); run `masn weights fetch --force` to install it again"
        ) from None
