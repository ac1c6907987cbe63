"""Verified, resumable downloads of published weights into the cache folder.

A file is downloaded into ``<cache>/<filename>.part`` (HTTP Range requests resume it after a
dropped connection or an interrupted run), verified, and only then renamed to its final name,
so a file under its final name is always complete. Verification uses what the publisher gives:
exact size, sha256 or torchvision's sha256 prefix. Files without a published sha256 are pinned
on first use in ``<cache>/weights.lock.json`` (trust on first use) and checked against that
record on every later use. Files placed in the cache by hand go through the same checks.
Processes sharing a cache (e.g. torchrun ranks) take turns through an advisory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from masn.errors import UserError
from masn.weights.manifest import WeightEntry

log = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
ENV_VAR = "MASN_WEIGHTS_DIR"
USER_AGENT = "masn-weights/0.1"
RETRIES = 5  # consecutive failed attempts per URL, without any progress, before giving up on it
BACKOFF_S = 1.0  # wait before the first retry; doubles with each further failed attempt
TIMEOUT_S = 60.0  # socket timeout of one connection (connect and each read)
_CHUNK = 1 << 20
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")
_local = threading.local()


class WeightsError(UserError, RuntimeError):
    """A weight file cannot be downloaded or is not the file the manifest describes."""


class VerificationError(WeightsError):
    """A file failed a size or checksum check; ``detail`` is the short reason."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Verification:
    """What a check found: the file's sha256 and size and what they were checked against.

    ``basis`` is "sha256", "sha256 prefix" (published), "lock file" (recorded earlier),
    "recorded" (first use: recorded now) or "unverified" (nothing to check against yet).
    """

    sha256: str
    size: int
    basis: str


class _Mismatch(Exception):
    """Internal: a check failed; the message is the short reason."""


class _UrlFailed(Exception):
    """Internal: this URL cannot deliver the file; the next one is tried."""


class _Interrupted(Exception):
    """Internal: a transfer failed in a way a retry may fix."""


def cache_dir() -> Path:
    """The weights cache: ``$MASN_WEIGHTS_DIR``, else ``cache/`` beside this package."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parent / "cache"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (with a progress bar: weight files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream, _bar(path.stat().st_size, f"sha256 {path.name}") as bar:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify(entry: WeightEntry, path: Path, *, record: bool = True) -> Verification:
    """Checks ``path`` against ``entry``: size, published sha256 or prefix, the lock file.

    Without a published sha256 the lock file beside ``path`` decides; with no record there
    yet, ``record=True`` records this file (trust on first use) and ``record=False`` leaves
    it "unverified". Raises :class:`VerificationError` naming the file and the mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; run `masn weights fetch {entry.name}`")
    try:
        return _check(entry, path, source="found in the cache" if record else None)
    except _Mismatch as exc:
        raise VerificationError(
            f"{path} is not the expected {entry.name}: {exc}. Delete it and run "
            f"`masn weights fetch {entry.name}`, or download it by hand from {entry.urls[0]}.",
            str(exc),
        ) from None


def fetch(entry: WeightEntry, cache: Path | None = None, force: bool = False) -> Path:
    """The verified local copy of ``entry``, downloaded first if absent (or if ``force``).

    A file already in the cache (downloaded earlier or placed by hand) is verified, never
    overwritten unless ``force``. Raises :class:`WeightsError` when no URL delivers the file
    or the download fails verification (the download is then deleted).
    """
    folder = Path(cache) if cache is not None else cache_dir()
    final = folder / entry.filename
    part = folder / f"{entry.filename}.part"
    with _cache_lock(folder):
        if final.exists() and not force:
            result = verify(entry, final)
            log.info("%s: %s present, verified (%s)", entry.name, final, result.basis)
            return final
        if force:
            part.unlink(missing_ok=True)
        url = _download_any(entry, part, final)
        try:
            result = _check(entry, part, source=url)
        except _Mismatch as exc:
            part.unlink(missing_ok=True)
            raise WeightsError(
                f"{entry.filename} downloaded from {url} failed verification: {exc}. "
                f"The download was deleted; nothing was written to {final}. Retry with "
                f"`masn weights fetch {entry.name}`; if it fails again the published file has "
                "changed or the server sends something else: check the URL in a browser."
            ) from None
        os.replace(part, final)
        log.info("%s: saved %s (%s, sha256 %s)", entry.name, final, result.basis, result.sha256)
        return final


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


def _check(entry: WeightEntry, path: Path, source: str | None) -> Verification:
    """Verifies ``path``; records it in the lock file (as coming from ``source``) if needed."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise _Mismatch(f"size is {size} bytes, expected {entry.size} (truncated or another file)")
    digest = file_sha256(path)
    if entry.sha256 is not None:
        if digest != entry.sha256:
            raise _Mismatch(f"sha256 is {digest}, expected {entry.sha256}")
        return Verification(digest, size, "sha256")
    basis = "unverified"
    if entry.sha256_prefix is not None:
        if not digest.startswith(entry.sha256_prefix):
            raise _Mismatch(f"sha256 is {digest}, expected one starting with {entry.sha256_prefix}")
        basis = "sha256 prefix"
    folder = path.parent
    with _cache_lock(folder) if source is not None else contextlib.nullcontext():
        recorded = read_lock(folder).get(entry.name)
        if recorded is not None:
            if (recorded.get("sha256"), recorded.get("size")) != (digest, size):
                raise _Mismatch(
                    f"sha256 {digest} ({size} bytes) differs from {recorded.get('sha256')} "
                    f"({recorded.get('size')} bytes) recorded in {folder / LOCK_NAME} on "
                    f"{recorded.get('recorded')} (from {recorded.get('source')}); if the "
                    f"publisher changed the file on purpose, delete the '{entry.name}' record "
                    "there to accept the new one"
                )
            return Verification(digest, size, "lock file" if basis == "unverified" else basis)
        if source is None:
            return Verification(digest, size, basis)
        _record(folder, entry, digest, size, source)
    return Verification(digest, size, "recorded" if basis == "unverified" else basis)


def _record(folder: Path, entry: WeightEntry, digest: str, size: int, source: str) -> None:
    """Adds the first-use record of ``entry`` to the lock file (atomic rewrite)."""
    files = read_lock(folder)
    files[entry.name] = {
        "filename": entry.filename,
        "sha256": digest,
        "size": size,
        "source": source,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n"
    temporary = folder / f".{LOCK_NAME}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, folder / LOCK_NAME)
    log.info("%s: no published checksum; recorded sha256 %s in %s", entry.name, digest, LOCK_NAME)


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """Exclusive use of ``folder`` across processes (flock on ``.lock``); re-entrant per thread."""
    held: dict[Path, int] = _local.__dict__.setdefault("held", {})
    key = folder.resolve()
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(key / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process using %s", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]


def _download_any(entry: WeightEntry, part: Path, final: Path) -> str:
    """Downloads ``entry`` into ``part`` from the first URL that works; returns that URL."""
    failures = []
    for number, url in enumerate(entry.urls):
        if number:
            part.unlink(missing_ok=True)  # never splice bytes from two servers
        log.info("%s: downloading %s", entry.name, url)
        try:
            _download(url, part, entry)
            return url
        except _UrlFailed as exc:
            log.warning("%s: %s", url, exc)
            failures.append(f"  {url}: {exc}")
    tried = "\n".join(failures)
    raise WeightsError(
        f"could not download {entry.name} ({entry.filename}):\n{tried}\n"
        f"Download it by hand (from a URL above or {entry.page}), save it as {final}, then "
        "run `masn weights list` to verify it."
    )


def _download(url: str, part: Path, entry: WeightEntry) -> None:
    """Completes ``part`` from ``url``, retrying with backoff; an attempt that leaves ``part``
    longer than ever before resets the count (a server that ignores Range gains nothing)."""
    failures = 0
    longest = part.stat().st_size if part.exists() else 0
    while True:
        try:
            _transfer(url, part, entry)
            return
        except _Interrupted as exc:
            size = part.stat().st_size if part.exists() else 0
            failures = 1 if size > longest else failures + 1
            longest = max(longest, size)
            if failures > RETRIES:
                raise _UrlFailed(f"{exc} (gave up after {RETRIES} retries)") from None
            wait = BACKOFF_S * 2 ** (failures - 1)
            log.warning("%s: %s; retrying in %.0f s", url, exc, wait)
            time.sleep(wait)


def _transfer(url: str, part: Path, entry: WeightEntry) -> None:
    """One HTTP request: appends the rest of the file to ``part`` (or restarts it)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            match = _CONTENT_RANGE.fullmatch(exc.headers.get("Content-Range", ""))
            if match and match.group(2) == str(offset):
                return  # the partial file is already complete
            part.unlink()
            raise _Interrupted("the server cannot resume this partial file; restarting") from None
        if exc.code in _TRANSIENT_STATUS:
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        raise _UrlFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (ssl.SSLError, socket.gaierror, ConnectionRefusedError)):
            raise _UrlFailed(f"cannot connect: {reason}") from None
        raise _Interrupted(f"connection failed: {reason}") from None
    with response:
        total = _response_total(response, offset, url)
        if response.status == 200:
            offset = 0
        if entry.size is not None and total is not None and total != entry.size:
            raise _UrlFailed(f"the server offers {total} bytes, expected {entry.size}")
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            raise _UrlFailed(
                "the server sent a web page instead of the file (a login, consent or error "
                "page?); open the URL in a browser"
            )
        received = 0
        mode = "ab" if offset else "wb"
        with open(part, mode) as out, _bar(total, entry.filename, offset) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Interrupted(
                        f"connection lost after {offset + received} bytes ({exc!r})"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    if total is not None and offset + received < total:
        raise _Interrupted(f"connection closed after {offset + received} of {total} bytes")


def _response_total(response: http.client.HTTPResponse, offset: int, url: str) -> int | None:
    """The full file size announced by a 200 or 206 response (None if not announced)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or match.group(1) is None or int(match.group(1)) != offset:
            raise _UrlFailed(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        return None if match.group(2) == "*" else int(match.group(2))
    if response.status != 200:
        raise _UrlFailed(f"unexpected HTTP status {response.status}")
    if offset:
        log.info("%s ignores Range requests; downloading from the start", url)
    return int(length) if length is not None and length.isdigit() else None


def _bar(total: int | None, description: str, initial: int = 0) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
    )
