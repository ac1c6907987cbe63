"""What the weights cache holds: each manifest entry missing, present, verified or corrupt.

Listing runs the checks of `masn weights fetch` (:func:`masn.weights.verification.verify`:
checksums, then validation of the format) but never downloads and never writes. It hashes every
present file; it validates a file unless the lock file records that this exact sha256 passed the
current validation (so a listing after fetch costs one read of each file). A file that fails
either check is "corrupt: <reason>"; one that passes without a published checksum or a lock
record stays "present (unverified)" until `masn weights fetch` records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from masn.weights.cache import cache_folder
from masn.weights.manifest import WeightEntry, load_manifest
from masn.weights.verification import VerificationError, verify

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
    """The state of one entry (hashes the file if present, validates it unless vouched for)."""
    folder = cache_folder(cache)
    path = folder / entry.filename
    part = folder / f"{entry.filename}.part"
    partial = part.stat().st_size if part.is_file() else 0
    if not path.is_file():
        return WeightStatus(entry, MISSING, path, partial)
    try:
        result = verify(entry, path)
    except VerificationError as exc:
        return WeightStatus(entry, f"{CORRUPT}: {exc.detail}", path, partial)
    state = UNVERIFIED if result.basis == "unverified" else VERIFIED
    return WeightStatus(entry, state, path, partial)


def list_weights(
    cache: Path | None = None, entries: Sequence[WeightEntry] | None = None
) -> list[WeightStatus]:
    """The state of every manifest entry (or of ``entries``), in manifest order."""
    return [weight_status(e, cache) for e in (load_manifest() if entries is None else entries)]
