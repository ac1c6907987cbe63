"""Whether a weights file is the one published and usable: checksums, the lock file, validation.

Verification has two steps: checksums (exact size, the publisher's sha256 or torchvision's
sha256 prefix, and the lock file) and validation (:mod:`masn.weights.validate`: the file reads
as its format, keys and shapes included). Downloads and files placed in the cache by hand go
through the same checks.

The lock file ``<cache>/weights.lock.json`` pins files without a published sha256 (trust on
first use): a file is recorded there only after it passed both steps, with a ``validated`` mark
(format and :data:`masn.weights.validate.VALIDATION_VERSION`), and is checked against that
record on every later use; a file that fails is never recorded. A record with a current mark
vouches for its exact sha256: that file is still hashed on every use, but not validated again.
Records written by older versions carry no mark and were never validated: their file is
validated (a failure makes fetch drop the record), and a file that differs from such a record is
judged by validation alone, then re-pinned by fetch. `masn weights list` runs the same checks and
writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from masn import atomic, progress
from masn.errors import UserError
from masn.weights.manifest import WeightEntry
from masn.weights.validate import VALIDATION_VERSION, InvalidFormat, validate

log = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
_CHUNK = 1 << 20


class WeightsError(UserError, RuntimeError):
    """A weight file cannot be downloaded or is not the file the manifest describes."""


class VerificationError(WeightsError):
    """A file failed a size, checksum or validation check; ``detail`` is the short reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class ValidationError(VerificationError):
    """A file's checksums passed (or none applied) but it does not read as its format."""

    def __init__(self, message: str, detail: str, sha256: str) -> None:
        super().__init__(message, detail)
        self.sha256 = sha256


@dataclass(frozen=True)
class Verification:
    """What the checks of one file found.

    ``basis``: what the checksum was checked against: "sha256" or "sha256 prefix" (published),
    "lock file" (recorded earlier), "recorded" (recorded by this fetch) or "unverified"
    (nothing yet). ``content``: what validation read (our state dict for a network, a
    :class:`masn.weights.glove.GloveFile` for GloVe); None exactly when the lock file vouched
    for this file, which was then not read again.
    """

    path: Path
    sha256: str
    size: int
    basis: str
    content: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def vouched(self) -> bool:
        """The lock file records that this exact file passed validation."""
        return self.content is None


class _Mismatch(Exception):
    """Internal: a check failed; the message is the short reason."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (with a progress bar: weight files are large)."""
    digest = hashlib.sha256()
    with (
        open(path, "rb") as stream,
        byte_progress(path.stat().st_size, f"sha256 {path.name}") as bar,
    ):
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify(entry: WeightEntry, path: Path) -> Verification:
    """Checks ``path`` against ``entry``, writing nothing: size, published sha256 or prefix,
    the lock file beside ``path``, then validation unless the lock vouches for the file.

    The file is hashed once. Raises :class:`VerificationError` naming the file and the
    mismatch (:class:`ValidationError` when validation failed).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; run `masn weights fetch {entry.name}`")
    advice = (
        f"Delete it and run `masn weights fetch {entry.name}`, or download it by hand from "
        f"{entry.urls[0]}."
    )
    try:
        digest, size, basis, vouched = _checksums(entry, path)
    except _Mismatch as exc:
        raise VerificationError(
            f"{path} is not the expected {entry.name}: {exc}. {advice}", str(exc)
        ) from None
    if vouched:
        return Verification(path, digest, size, basis)
    try:
        content = validate(entry, path)
    except InvalidFormat as exc:
        reason = str(exc).rstrip(".")
        raise ValidationError(
            f"{path} is not a usable {entry.name} ({entry.format}): {reason}. It was not "
            f"recorded as verified. {advice}",
            reason,
            digest,
        ) from None
    return Verification(path, digest, size, basis, content)


def read_lock(folder: Path) -> dict[str, dict[str, Any]]:
    """The records of ``<folder>/weights.lock.json`` by entry name (empty if there is none)."""
    path = folder / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} is unreadable ({exc}); repair it or delete it (deleting it forgets the "
            "checksums recorded on first download)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise WeightsError(f"{path} is not a weights lock file; repair it or delete it")
    return data["files"]


def _checksums(entry: WeightEntry, path: Path) -> tuple[str, int, str, bool]:
    """(sha256, size, basis, whether the lock vouches for the file): size, published checksums
    and the lock record; raises _Mismatch."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise _Mismatch(f"size is {size} bytes, expected {entry.size} (truncated or another file)")
    digest = file_sha256(path)
    if entry.sha256 is not None:
        if digest != entry.sha256:
            raise _Mismatch(f"sha256 is {digest}, expected {entry.sha256}")
        return digest, size, "sha256", False
    basis = "unverified"
    if entry.sha256_prefix is not None:
        if not digest.startswith(entry.sha256_prefix):
            raise _Mismatch(f"sha256 is {digest}, expected one starting with {entry.sha256_prefix}")
        basis = "sha256 prefix"
    folder = path.parent
    recorded = read_lock(folder).get(entry.name)
    if recorded is None:
        return digest, size, basis, False
    if (recorded.get("sha256"), recorded.get("size")) == (digest, size):
        vouched = _vouches(recorded, entry)
        return digest, size, "lock file" if basis == "unverified" else basis, vouched
    if "validated" in recorded:
        raise _Mismatch(
            f"sha256 {digest} ({size} bytes) differs from {recorded.get('sha256')} "
            f"({recorded.get('size')} bytes) recorded in {folder / LOCK_NAME} on "
            f"{recorded.get('recorded')} (from {recorded.get('source')}); if the "
            f"publisher changed the file on purpose, delete the '{entry.name}' record "
            "there to accept the new one"
        )
    log.warning(
        "%s: %s differs from the record in %s, which an older masn wrote without validating "
        "its file; the record is not trusted and the file is judged by validation",
        entry.name,
        path.name,
        LOCK_NAME,
    )
    return digest, size, basis, False


def _vouches(record: dict[str, Any], entry: WeightEntry) -> bool:
    """Whether a lock record's file passed the current validation of ``entry``'s format."""
    marked = record.get("validated")
    return isinstance(marked, dict) and (marked.get("format"), marked.get("version")) == (
        entry.format,
        VALIDATION_VERSION,
    )


def verify_and_pin(entry: WeightEntry, path: Path, source: str) -> Verification:
    """:func:`verify`, then (no published sha256) the lock record of the verified file: new,
    or marked validated; a record of this very file that fails validation is dropped."""
    folder = path.parent
    try:
        result = verify(entry, path)
    except ValidationError as exc:
        files = read_lock(folder)
        if files.get(entry.name, {}).get("sha256") == exc.sha256:
            del files[entry.name]
            _write_lock(folder, files)
            log.warning(
                "%s: removed its record from %s: its file fails validation", entry.name, LOCK_NAME
            )
        raise
    if entry.sha256 is not None or result.vouched:
        return result
    files = read_lock(folder)
    recorded = files.get(entry.name)
    same = recorded is not None and recorded.get("sha256") == result.sha256
    record = {
        "filename": entry.filename,
        "sha256": result.sha256,
        "size": result.size,
        "source": recorded.get("source") if same else source,
        "recorded": recorded.get("recorded") if same else _now(),
        "validated": {"format": entry.format, "version": VALIDATION_VERSION, "on": _now()},
    }
    files[entry.name] = record
    _write_lock(folder, files)
    log.info("%s: recorded sha256 %s as validated in %s", entry.name, result.sha256, LOCK_NAME)
    basis = "recorded" if result.basis == "unverified" else result.basis
    return dataclasses.replace(result, basis=basis)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_lock(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Rewrites the lock file with ``files`` (atomically); the caller holds the cache lock."""
    text = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n"
    atomic.write_text(folder / LOCK_NAME, text)


def byte_progress(total: int | None, description: str, initial: int = 0) -> tqdm:
    """A progress bar of bytes (hashing here, downloading in :mod:`masn.weights.download`)."""
    return progress.bar(
        total=total,
        initial=initial,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
    )
