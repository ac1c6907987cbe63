"""The manifest of published weight files we support (``manifest.json`` beside this module).

Each entry names one file as its publisher serves it: where to get it, how to check it, under
which licence, and which format it is in (:mod:`masn.weights.formats.registry`: the known
roles and formats). Checksums are only those the publisher gives (torchvision's file names
carry a sha256 prefix); files without one are pinned by the lock file of
:mod:`masn.weights.verification` on first download.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masn.errors import UnknownName
from masn.weights.formats.registry import ROLES, format_names

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
_HEX = re.compile(r"[0-9a-f]+")
_STATED = re.compile(r"\d+(\.\d+)? (B|KB|MB|GB|KiB|MiB|GiB)")


@dataclass(frozen=True)
class WeightEntry:
    """One published file: identity, sources, checks, licence and the format that reads it."""

    name: str
    role: str
    format: str
    urls: tuple[str, ...]
    filename: str
    size: int | None
    sha256: str | None
    sha256_prefix: str | None
    licence: str
    page: str
    description: str
    default: bool
    stated_size: str | None = None
    """The size the publisher states where no exact byte count is known (``size``), e.g.
    "230.434 MiB": shown by `masn weights list`, never checked."""

    def __post_init__(self) -> None:
        problems = []
        if self.role not in ROLES:
            problems.append(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.format not in format_names():
            problems.append(f"format {self.format!r} is not one of {sorted(format_names())}")
        if not self.urls or not all(u.startswith(("http://", "https://")) for u in self.urls):
            problems.append("urls must be a non-empty list of http(s) URLs")
        if not self.filename or Path(self.filename).name != self.filename:
            problems.append(f"filename {self.filename!r} must be a bare file name")
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            problems.append(f"size {self.size!r} must be a positive number of bytes or null")
        if self.stated_size is not None and not _STATED.fullmatch(str(self.stated_size)):
            problems.append(f"stated_size {self.stated_size!r} must read like '230.4 MiB' or null")
        if self.sha256 is not None and not (len(self.sha256) == 64 and _HEX.fullmatch(self.sha256)):
            problems.append("sha256 must be 64 lower-case hex digits or null")
        prefix = self.sha256_prefix
        if prefix is not None and not (8 <= len(prefix) < 64 and _HEX.fullmatch(prefix)):
            problems.append("sha256_prefix must be 8 to 63 lower-case hex digits or null")
        if problems:
            raise ValueError(f"manifest entry {self.name!r}: " + "; ".join(problems))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WeightEntry:
        fields = set(cls.__dataclass_fields__)
        required = {name for name in fields if name != "stated_size"}
        if not required <= set(data) <= fields:
            missing, extra = sorted(required - set(data)), sorted(set(data) - fields)
            raise ValueError(
                f"manifest entry {data.get('name')!r}: missing fields {missing}, unknown {extra}"
            )
        return cls(**{**data, "urls": tuple(data["urls"])})


@functools.cache
def load_manifest(path: Path = MANIFEST_PATH) -> tuple[WeightEntry, ...]:
    """All entries of the manifest, validated (unique names and file names, known roles)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != 1:
        raise ValueError(f"{path}: unsupported manifest version {data.get('version')!r}")
    entries = tuple(WeightEntry.from_json(item) for item in data["entries"])
    for field in ("name", "filename"):
        values = [getattr(e, field) for e in entries]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"{path}: duplicate {field}s {duplicates}")
    return entries


def get(name: str) -> WeightEntry:
    """The entry called ``name``; the KeyError lists the known names."""
    for entry in load_manifest():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in load_manifest())
    raise UnknownName(f"unknown weights {name!r}; the manifest has: {known}")


def default_entries() -> tuple[WeightEntry, ...]:
    """The entries `masn weights fetch` (and `make weights`) download when given no names."""
    return tuple(e for e in load_manifest() if e.default)
