"""Converted weights, ready for the extractor: one state dict per network role in the cache.

``masn weights fetch`` converts each verified detector, I3D and ResNet-152 file into
``<cache>/<role>.pt`` (a plain state dict of our module, loaded with ``weights_only=True``) next
to ``<role>.json``, which records the published file it came from and that file's sha256: the
provenance every feature store keeps. The last file fetched for a role is the one installed.
The conversion is the one validation already made when it read the file (see
:mod:`masn.weights.validate`), and the sha256 the one verification computed: a file is read and
hashed once per fetch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from masn import atomic
from masn.errors import MissingInput
from masn.weights.formats.registry import NETWORK_ROLES, convert, get_format
from masn.weights.formats.source_tensors import StateDict
from masn.weights.manifest import WeightEntry
from masn.weights.verification import Verification

log = logging.getLogger(__name__)

ROLE_FILES = {role: f"{role}.pt" for role in NETWORK_ROLES}


@dataclass(frozen=True)
class Installed:
    """Where a role's converted weights came from."""

    role: str
    source: str  # manifest entry name
    filename: str
    format: str
    sha256: str  # of the published file
    layout: str | None = None  # the backbone its weights fill, where a role has several (I3D)

    def describe(self) -> str:
        return f"{self.source} ({self.filename}, sha256 {self.sha256})"


def install(entry: WeightEntry, verified: Verification, folder: Path) -> Installed:
    """Writes the converted weights of ``entry``'s verified file into ``folder/<role>.pt``:
    the state dict validation read, or (when the lock vouched for the file) a fresh conversion."""
    if entry.role not in ROLE_FILES:
        raise ValueError(f"{entry.name} ({entry.role}) is not a network of the extractor")
    state = convert(entry.format, verified.path) if verified.vouched else verified.content
    record = Installed(
        role=entry.role,
        source=entry.name,
        filename=entry.filename,
        format=entry.format,
        sha256=verified.sha256,
        layout=get_format(entry.format).layout,
    )
    with atomic.replacing(folder / ROLE_FILES[entry.role]) as temporary:
        torch.save(state, temporary)
    atomic.write_text(folder / f"{entry.role}.json", json.dumps(asdict(record), indent=2))
    log.info("installed %s as the %s weights in %s", entry.name, entry.role, folder)
    return record


def read_installed(folder: Path, role: str) -> tuple[StateDict, Installed]:
    """The converted state dict of ``role`` and its provenance; clear errors when absent."""
    weights, meta = folder / ROLE_FILES[role], folder / f"{role}.json"
    if not weights.is_file() or not meta.is_file():
        raise MissingInput(
            f"{folder} has no converted {role} weights ({weights.name}): run `masn weights fetch` "
            "(in a checkout: `make weights`), or pass --random-weights for a smoke run"
        )
    record = Installed(**json.loads(meta.read_text()))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return state, record
