"""What the weights cache holds: each manifest entry missing, present, verified or corrupt.

Listing never downloads and never writes: a file without a published checksum and without a
lock-file record stays "present (unverified)" until `masn weights fetch` records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from masn.weights.download import VerificationError, cache_dir, verify
from masn.weights.manifest import WeightEntry, load_manifest

MISSING = "missing"
UNVERIFIED = "present (unverified)"
VERIFIED = "verified"
CORRUPT = "corrupt"


class WeightStatus(NamedTuple):
    """One entry's state in the cache; unpacks as ``(entry, state)`` plus details."""

    entry: WeightEntry
    state: str  # MISSING, UNVERIFIED, VERIFIED or "corrupt: <reason>"
    path: Path
    partial_bytes: int  # size of an unfinished download (<filename>.part), 0 if none


def weight_status(entry: WeightEntry, cache: Path | None = None) -> WeightStatus:
    """The state of one entry (hashes the file if present)."""
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / entry.filename
    part = folder / f"{entry.filename}.part"
    partial = part.stat().st_size if part.is_file() else 0
    if not path.is_file():
        return WeightStatus(entry, MISSING, path, partial)
    try:
        result = verify(entry, path, record=False)
    except VerificationError as exc:
        return WeightStatus(entry, f"{CORRUPT}: {exc.detail}", path, partial)
    state = UNVERIFIED if result.basis == "unverified" else VERIFIED
    return WeightStatus(entry, state, path, partial)


def list_weights(
    cache: Path | None = None, entries: Sequence[WeightEntry] | None = None
) -> list[WeightStatus]:
    """The state of every manifest entry (or of ``entries``), in manifest order."""
    return [weight_status(e, cache) for e in (load_manifest() if entries is None else entries)]
