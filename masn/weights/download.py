"""Verified, resumable downloads of published weights into the cache folder.

A file is downloaded into ``<cache>/<filename>.part`` (HTTP Range requests resume it after a
dropped connection or an interrupted run), verified, and only then renamed to its final name,
so a file under its final name is always complete. Verification has two steps: checksums (exact
size, the publisher's sha256 or torchvision's sha256 prefix, and the lock file) and validation
(:mod:`masn.weights.validate`: the file reads as its format, keys and shapes included). Files
placed in the cache by hand go through the same checks.

The lock file ``<cache>/weights.lock.json`` pins files without a published sha256 (trust on
first use): a file is recorded there only after it passed both steps, with a ``validated`` mark
(format and :data:`masn.weights.validate.VALIDATION_VERSION`), and is checked against that
record on every later use; a file that fails is never recorded. A record with a current mark
vouches for its exact sha256: that file is still hashed on every use, but not validated again.
Records written by older versions carry no mark and were never validated: their file is
validated (a failure makes fetch drop the record), and a file that differs from such a record is
judged by validation alone, then re-pinned by fetch. `masn weights list` runs the same checks and
writes nothing.

Network waits are bounded. Each attempt waits at most :data:`TIMEOUT_S` to connect and for each
read, and at most half of the URL's budget left, so that a network accepting connections and never
answering, or dropping every packet, gives a URL up within :data:`STALL_S` (connect, then the
answer: two waits per attempt; backoff waits that would not fit end the URL). The budget starts
again whenever the file grows. A URL is also given up after :data:`RETRIES` failed attempts in a
row without getting further, and at once on errors retrying cannot heal: connection refused,
unknown host, unreachable network, TLS errors, HTTP 4xx other than 408, 425 and 429. Not bounded
here: host-name resolution (the system resolver's own timeouts) and servers that keep answering
a byte at a time. Processes sharing a cache (e.g. torchrun ranks) take turns through an advisory
lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from masn.errors import InvalidInput, UserError
from masn.weights.manifest import WeightEntry
from masn.weights.validate import VALIDATION_VERSION, InvalidFormat, validate

log = logging.getLogger(__name__)

LOCK_NAME = "weights.lock.json"
ENV_VAR = "MASN_WEIGHTS_DIR"
USER_AGENT = "masn-weights/0.1"
TIMEOUT_S = 10.0  # longest wait of one attempt to connect, and for each read
STALL_S = 25.0  # a URL that adds nothing to the file for this long is given up, waits included
RETRIES = 5  # consecutive failed attempts per URL, without any progress, before giving up on it
BACKOFF_S = 1.0  # wait before the first retry; doubles with each further failed attempt
_CHUNK = 1 << 20
_RETRIED_STATUS = frozenset({408, 425, 429})  # and every 5xx: the server may recover
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


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


class _UrlFailed(Exception):
    """Internal: this URL cannot deliver the file; the next one is tried."""


class _Interrupted(Exception):
    """Internal: a transfer failed in a way a retry may fix."""


def cache_dir() -> Path:
    """The weights cache: ``$MASN_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/masn``, else
    ``~/.cache/masn``: a user folder, never inside the installed package (which a reinstall
    replaces and which may be read-only). Raises InvalidInput if that path is a file."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        folder = Path(configured).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".cache"  # XDG: absolute
        folder = base / "masn"
    return _not_a_file(folder)


def cache_folder(cache: Path | None = None, *, writable: bool = False) -> Path:
    """The cache folder to use: ``cache`` (a --cache option) or :func:`cache_dir`.

    ``writable``: created if absent and checked writable (fetch); listing leaves it as it is.
    Raises InvalidInput, one line saying what to change, when the folder cannot serve.
    """
    folder = _not_a_file(Path(cache).expanduser()) if cache is not None else cache_dir()
    if writable:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidInput(
                f"cannot create the weights cache {folder} ({error.strerror or error}): choose "
                f"another folder with --cache or {ENV_VAR}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InvalidInput(
                f"cannot write to the weights cache {folder}: fix its permissions or choose "
                f"another folder with --cache or {ENV_VAR}"
            )
    return folder


def _not_a_file(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(
            f"the weights cache {folder} is a file, not a folder: point --cache or {ENV_VAR} "
            "at a folder (it is created if absent)"
        )
    return folder


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks (with a progress bar: weight files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream, _bar(path.stat().st_size, f"sha256 {path.name}") as bar:
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


def fetch(entry: WeightEntry, cache: Path | None = None, force: bool = False) -> Verification:
    """The verified local copy of ``entry``, downloaded first if absent (or if ``force``).

    A file already in the cache (downloaded earlier or placed by hand) is verified, never
    overwritten unless ``force``. A file without a published sha256 is recorded in the lock
    file once it passed verification. Raises :class:`WeightsError` when no URL delivers the
    file or the file fails verification (a failed download is deleted).
    """
    folder = cache_folder(cache, writable=True)
    final = folder / entry.filename
    part = folder / f"{entry.filename}.part"
    with _cache_lock(folder):
        if final.exists() and not force:
            result = _verify_and_pin(entry, final, "found in the cache")
            log.info("%s: %s present, verified (%s)", entry.name, final, result.basis)
            return result
        if force:
            part.unlink(missing_ok=True)
        url = _download_any(entry, part, final)
        try:
            result = _verify_and_pin(entry, part, url)
        except VerificationError as exc:
            part.unlink(missing_ok=True)
            raise WeightsError(
                f"{entry.filename} downloaded from {url} failed verification: {exc.detail}. "
                f"The download was deleted; nothing was written to {final}. Retry with "
                f"`masn weights fetch {entry.name}`; if it fails again the published file has "
                "changed or the server sends something else: check the URL in a browser."
            ) from None
        os.replace(part, final)
        log.info("%s: saved %s (%s, sha256 %s)", entry.name, final, result.basis, result.sha256)
        return dataclasses.replace(result, path=final)


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


def _verify_and_pin(entry: WeightEntry, path: Path, source: str) -> Verification:
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
    temporary = folder / f".{LOCK_NAME}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, folder / LOCK_NAME)


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """Exclusive use of ``folder`` across processes and threads (flock on ``.lock``)."""
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process using %s", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
        f"run `masn weights fetch {entry.name}` to verify and install it (`masn weights list` "
        "shows its state)."
    )


def _download(url: str, part: Path, entry: WeightEntry) -> None:
    """Completes ``part`` from ``url``, retrying with backoff. Progress is ``part`` growing
    longer than ever before (a server that ignores Range gains nothing): it resets both the
    count of failed attempts and the :data:`STALL_S` budget, which bounds attempts and waits."""
    failures = 0
    longest = part.stat().st_size if part.exists() else 0
    deadline = time.monotonic() + STALL_S
    while True:
        # An attempt waits twice at most (connect, then the answer): both fit in the budget.
        timeout = min(TIMEOUT_S, (deadline - time.monotonic()) / 2)
        try:
            _transfer(url, part, entry, timeout)
            return
        except _Interrupted as exc:
            size = part.stat().st_size if part.exists() else 0
            if size > longest:
                failures, longest, deadline = 1, size, time.monotonic() + STALL_S
            else:
                failures += 1
            if failures > RETRIES:
                raise _UrlFailed(f"{exc} (gave up after {RETRIES} retries)") from None
            wait = BACKOFF_S * 2 ** (failures - 1)
            if time.monotonic() + wait >= deadline:
                raise _UrlFailed(
                    f"{exc} (nothing received for {STALL_S:g} s; gave up on this URL)"
                ) from None
            log.warning("%s: %s; retrying in %g s", url, exc, wait)
            time.sleep(wait)


def _transfer(url: str, part: Path, entry: WeightEntry, timeout: float) -> None:
    """One HTTP request: appends the rest of the file to ``part`` (or restarts it); waits at
    most ``timeout`` to connect and for each read."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            match = _CONTENT_RANGE.fullmatch(exc.headers.get("Content-Range", ""))
            if match and match.group(2) == str(offset):
                return  # the partial file is already complete
            part.unlink()
            raise _Interrupted("the server cannot resume this partial file; restarting") from None
        if exc.code in _RETRIED_STATUS or exc.code >= 500:
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        raise _UrlFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise _Interrupted(f"no answer within {timeout:.3g} s") from None
        if _hopeless(reason):
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


def _hopeless(reason: object) -> bool:
    """Whether a connection error is one that retrying cannot heal: connection refused,
    unknown host, unreachable network, TLS failure, or no error at all but a message."""
    if isinstance(reason, (ssl.SSLError, socket.gaierror, ConnectionRefusedError)):
        return True
    if isinstance(reason, OSError):
        return reason.errno in _UNREACHABLE
    return not isinstance(reason, http.client.HTTPException)


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
