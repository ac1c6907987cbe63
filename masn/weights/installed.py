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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from masn.errors import MissingInput
from masn.weights.convert import convert
from masn.weights.download import Verification
from masn.weights.manifest import WeightEntry
from masn.weights.source_tensors import StateDict

log = logging.getLogger(__name__)

ROLE_FILES = {"detector": "detector.pt", "resnet152": "resnet152.pt", "i3d": "i3d.pt"}
# Which I3D architecture each I3D format fills (extract.i3d.MotionFeatures layouts).
I3D_LAYOUTS = {"caffe2_i3d": "nonlocal", "pytorchvideo_i3d": "pytorchvideo"}


@dataclass(frozen=True)
class Installed:
    """Where a role's converted weights came from."""

    role: str
    source: str  # manifest entry name
    filename: str
    format: str
    sha256: str  # of the published file
    layout: str | None = None  # I3D only

    def describe(self) -> str:
        return f"{self.source} ({self.filename}, sha256 {self.sha256})"


def _atomic_write(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
        layout=I3D_LAYOUTS.get(entry.format),
    )
    _atomic_write(folder / ROLE_FILES[entry.role], lambda path: torch.save(state, path))
    meta = folder / f"{entry.role}.json"
    _atomic_write(meta, lambda path: path.write_text(json.dumps(asdict(record), indent=2)))
    log.info("installed %s as the %s weights in %s", entry.name, entry.role, folder)
    return record


def read_installed(folder: Path, role: str) -> tuple[StateDict, Installed]:
    """The converted state dict of ``role`` and its provenance; clear errors when absent."""
    weights, meta = folder / ROLE_FILES[role], folder / f"{role}.json"
    if not weights.is_file() or not meta.is_file():
        raise MissingInput(
            f"{folder} has no converted {role} weights ({weights.name}): run `make weights` "
            "(or `masn weights fetch`), or pass --random-weights for a smoke run"
        )
    record = Installed(**json.loads(meta.read_text()))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return state, record
