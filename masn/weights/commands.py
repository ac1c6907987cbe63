"""`masn weights fetch` and `masn weights list`: the command bodies, returning exit codes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from masn.roles import ROLES
from masn.weights.cache import cache_folder
from masn.weights.download import fetch
from masn.weights.formats.source_tensors import ConversionError
from masn.weights.installed import install
from masn.weights.manifest import WeightEntry, default_entries, get
from masn.weights.status import CORRUPT, UNVERIFIED, list_weights
from masn.weights.verification import LOCK_NAME, WeightsError

log = logging.getLogger(__name__)


def fetch_command(names: Sequence[str] | None, cache: Path | None, force: bool) -> int:
    """Downloads, verifies and (for the extractor's networks) converts ``names`` (the default
    set if none): 0 ok, 1 failures, 2 usage. Raises InvalidInput for an unusable cache folder."""
    try:
        entries = [get(name) for name in names] if names else list(default_entries())
    except KeyError as exc:
        log.error("%s", exc.args[0])
        return 2
    folder = cache_folder(cache, writable=True)
    failed = []
    for entry in entries:
        try:
            verified = fetch(entry, folder, force=force)
            if entry.role in ROLES:
                install(entry, verified, folder)
        except (WeightsError, ConversionError) as exc:
            log.error("%s", exc)
            failed.append(entry.name)
    if failed:
        log.error("%d of %d failed: %s", len(failed), len(entries), ", ".join(failed))
        return 1
    log.info("%d file(s) present and verified in %s", len(entries), folder)
    return 0


def list_command(cache: Path | None) -> int:
    """Prints every manifest entry with its state in the cache: 0 ok, 1 if any is corrupt.
    Writes nothing; raises InvalidInput when the cache folder is a file."""
    folder = cache_folder(cache)
    try:
        statuses = list_weights(folder)
    except WeightsError as exc:
        log.error("%s", exc)
        return 1
    header = ("NAME", "ROLE", "DEFAULT", "FILE", "SIZE", "STATE")
    rows = [
        (
            s.entry.name,
            s.entry.role,
            "yes" if s.entry.default else "",
            s.entry.filename,
            _shown_size(s.entry, s.path),
            s.state + (f" ({_size(s.partial_bytes)} partly downloaded)" if s.partial_bytes else ""),
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    print(f"\ncache: {folder} (set MASN_WEIGHTS_DIR to change it); records: {folder / LOCK_NAME}")
    if any(s.state == UNVERIFIED for s in statuses):
        print("unverified files have no published checksum: `masn weights fetch NAME` records it")
    corrupt = [s.entry.name for s in statuses if s.state.startswith(CORRUPT)]
    if corrupt:
        names = " ".join(corrupt)
        print(f"corrupt files: download them again with `masn weights fetch --force {names}`")
    return 1 if corrupt else 0


def _shown_size(entry: WeightEntry, path: Path) -> str:
    """The file's size where it is there, else the exact size the manifest knows, else the
    size its publisher states (about), else "unknown"."""
    if path.is_file():
        return _size(path.stat().st_size)
    if entry.size is not None:
        return _size(entry.size)
    return f"~{entry.stated_size}" if entry.stated_size else "unknown"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
