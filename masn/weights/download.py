"""Resumable downloads of published weights into the cache folder (`masn weights fetch`).

A file is downloaded into ``<cache>/<filename>.part`` (HTTP Range requests resume it after a
dropped connection or an interrupted run), verified (:mod:`masn.weights.verification`: checksums,
the lock file, validation), and only then renamed to its final name, so a file under its final
name is always complete. A file already in the cache (downloaded earlier or placed by hand) is
verified, not downloaded.

Network waits are bounded. Each attempt waits at most :data:`TIMEOUT_S` to connect and for each
read, and at most half of the URL's budget left, so that a network accepting connections and never
answering, or dropping every packet, gives a URL up within :data:`STALL_S` (connect, then the
answer: two waits per attempt; backoff waits that would not fit end the URL). The budget starts
again whenever the file grows. A URL is also given up after :data:`RETRIES` failed attempts in a
row without getting further, and at once on errors retrying cannot heal: connection refused,
unknown host, unreachable network, TLS errors, HTTP 4xx other than 408, 425 and 429. Not bounded
here: host-name resolution (the system resolver's own timeouts) and servers that keep answering
a byte at a time. Processes sharing a cache (e.g. torchrun ranks) take turns through its lock
(:func:`masn.weights.cache.cache_lock`).
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import logging
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from masn.atomic import reporting_full_disk
from masn.weights.cache import cache_folder, cache_lock
from masn.weights.manifest import WeightEntry
from masn.weights.verification import (
    Verification,
    VerificationError,
    WeightsError,
    byte_progress,
    verify_and_pin,
)

log = logging.getLogger(__name__)

USER_AGENT = "masn-weights/0.1"
TIMEOUT_S = 10.0  # longest wait of one attempt to connect, and for each read
STALL_S = 25.0  # a URL that adds nothing to the file for this long is given up, waits included
RETRIES = 5  # consecutive failed attempts per URL, without any progress, before giving up on it
BACKOFF_S = 1.0  # wait before the first retry; doubles with each further failed attempt
_CHUNK = 1 << 20
_RETRIED_STATUS = frozenset({408, 425, 429})  # and every 5xx: the server may recover
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class _UrlFailed(Exception):
    """Internal: this URL cannot deliver the file; the next one is tried."""


class _Interrupted(Exception):
    """Internal: a transfer failed in a way a retry may fix."""


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
    with cache_lock(folder):
        if final.exists() and not force:
            result = verify_and_pin(entry, final, "found in the cache")
            log.info("%s: %s present, verified (%s)", entry.name, final, result.basis)
            return result
        if force:
            part.unlink(missing_ok=True)
        url = _download_any(entry, part, final)
        try:
            result = verify_and_pin(entry, part, url)
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
        with (
            reporting_full_disk(part, None if total is None else total - offset),  # rerun resumes
            open(part, mode) as out,
            byte_progress(total, entry.filename, offset) as bar,
        ):
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
