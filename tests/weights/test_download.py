"""Weights manifest, verified downloads (against a local HTTP server), lock file, validation
before pinning, bounded network waits, the cache folder and its states.

The test entries are GloVe text files (the ``glove_text`` format, validated like every format
before a file is trusted); the network formats' validation is tested with synthetic files in
test_weights_convert.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import masn
from masn.errors import UserError
from masn.pipeline.cli import main
from masn.weights import commands, download
from masn.weights.download import (
    LOCK_NAME,
    VerificationError,
    WeightsError,
    cache_dir,
    fetch,
    file_sha256,
    read_lock,
    verify,
)
from masn.weights.manifest import FORMATS, ROLES, WeightEntry, default_entries, get, load_manifest
from masn.weights.status import CORRUPT, MISSING, UNVERIFIED, VERIFIED, list_weights
from masn.weights.validate import VALIDATION_VERSION, VALIDATORS


def glove_text(size: int, dim: int = 8, seed: int = 0) -> bytes:
    """A GloVe text file of about ``size`` bytes: ``w<i>`` and ``dim`` random numbers a line."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < size:
        numbers = " ".join(f"{rng.uniform(-1, 1):.6f}" for _ in range(dim))
        lines.append(f"w{len(lines)} {numbers}\n".encode())
        total += len(lines[-1])
    return b"".join(lines)


PAYLOAD = glove_text(3 << 20)  # three download chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()
DROP_AT = 1_500_000


@dataclass
class ServerState:
    """What the test server serves and how it misbehaves; it records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)  # path -> forced error status
    drop_after: int = DROP_AT  # a dropped response ends after this many body bytes
    drops: int = 0  # how many of the next responses are dropped
    ignore_range: bool = False
    content_type: str = "application/octet-stream"
    delay: float = 0.0  # seconds before each answer
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 file server with ``Range: bytes=N-`` support and scripted failures."""

    def do_GET(self) -> None:
        state: ServerState = self.server.state
        requested_range = self.headers.get("Range")
        state.requests.append((self.path, requested_range))
        time.sleep(state.delay)
        if self.path in state.status:
            self.send_error(state.status[self.path])
            return
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if requested_range and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested_range).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", state.content_type)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if state.drops:
            body, state.drops = body[: state.drop_after], state.drops - 1
        with contextlib.suppress(ConnectionError):  # the client may hang up early
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HTTPServer(ThreadingHTTPServer):
    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state


class Server:
    """The test server on 127.0.0.1, serving PAYLOAD as /model.bin from a thread."""

    def __init__(self) -> None:
        self.state = ServerState(files={"/model.bin": PAYLOAD})
        self.httpd = HTTPServer(self.state)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/model.bin") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "RETRIES", 2)


def make_entry(urls: list[str], **overrides: object) -> WeightEntry:
    values: dict[str, object] = {
        "name": "test-model",
        "role": "glove",
        "format": "glove_text",
        "urls": tuple(urls),
        "filename": "model.bin",
        "size": None,
        "sha256": None,
        "sha256_prefix": None,
        "licence": "test",
        "page": "http://127.0.0.1/",
        "description": "test file",
        "default": False,
    }
    values.update(overrides)
    return WeightEntry(**values)


def visible(folder: Path) -> list[str]:
    """Files in the cache other than the hidden advisory lock."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_fetch_downloads_and_checks_sha256(server: Server, tmp_path: Path) -> None:
    path = fetch(make_entry([server.url()], sha256=SHA, size=len(PAYLOAD)), tmp_path).path
    assert path == tmp_path / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert visible(tmp_path) == ["model.bin"]  # no .part, no lock record (sha256 published)
    assert server.state.requests == [("/model.bin", None)]


def test_known_size_mismatch_is_refused(server: Server, tmp_path: Path) -> None:
    entry = make_entry([server.url()], size=len(PAYLOAD) + 1)
    with pytest.raises(WeightsError) as error:
        fetch(entry, tmp_path)
    message = str(error.value)
    assert server.url() in message and str(len(PAYLOAD)) in message
    assert str(len(PAYLOAD) + 1) in message
    assert visible(tmp_path) == []


def test_wrong_sha256_is_a_clear_error_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    expected = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(WeightsError) as error:
        fetch(make_entry([server.url()], sha256=expected), tmp_path)
    message = str(error.value)
    for part in ("model.bin", server.url(), expected, SHA):
        assert part in message
    assert visible(tmp_path) == []


def test_sha256_prefix_as_torchvision_publishes_it(server: Server, tmp_path: Path) -> None:
    path = fetch(make_entry([server.url()], sha256_prefix=SHA[:8]), tmp_path).path
    assert path.read_bytes() == PAYLOAD
    assert read_lock(tmp_path)["test-model"]["sha256"] == SHA  # the full hash is pinned too
    wrong = ("0" if SHA[0] != "0" else "1") + SHA[1:8]
    with pytest.raises(WeightsError, match=f"starting with {wrong}"):
        fetch(
            make_entry([server.url()], name="other", filename="o.bin", sha256_prefix=wrong),
            tmp_path,
        )
    assert not (tmp_path / "o.bin").exists() and not (tmp_path / "o.bin.part").exists()


def test_dropped_connection_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.state.drops = 1
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path).path
    assert server.state.requests == [("/model.bin", None), ("/model.bin", f"bytes={DROP_AT}-")]
    assert path.read_bytes() == PAYLOAD


def test_partial_file_of_an_earlier_run_is_resumed(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:DROP_AT])
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path).path
    assert server.state.requests == [("/model.bin", f"bytes={DROP_AT}-")]
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_file_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path).path
    assert server.state.requests == [("/model.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.state.drops = 1
    server.state.ignore_range = True
    with caplog.at_level(logging.INFO, logger="masn.weights.download"):
        path = fetch(make_entry([server.url()], sha256=SHA), tmp_path).path
    assert server.state.requests[1] == ("/model.bin", f"bytes={DROP_AT}-")
    assert path.read_bytes() == PAYLOAD
    assert "ignores Range" in caplog.text


def test_transfers_that_never_get_further_are_given_up(server: Server, tmp_path: Path) -> None:
    server.state.drops = 100
    server.state.ignore_range = True
    with pytest.raises(WeightsError, match=f"gave up after {download.RETRIES} retries"):
        fetch(make_entry([server.url()], sha256=SHA), tmp_path)
    assert len(server.state.requests) == download.RETRIES + 1
    assert not (tmp_path / "model.bin").exists()


def test_lock_file_pins_first_download_and_catches_changes(server: Server, tmp_path: Path) -> None:
    entry = make_entry([server.url()])
    path = fetch(entry, tmp_path).path
    record = json.loads((tmp_path / LOCK_NAME).read_text())["files"]["test-model"]
    assert (record["sha256"], record["size"], record["source"]) == (SHA, len(PAYLOAD), server.url())
    assert fetch(entry, tmp_path).path == path  # later use: verified against the record
    assert len(server.state.requests) == 1
    with open(path, "r+b") as stream:  # the cached file gets truncated
        stream.truncate(1000)
    with pytest.raises(VerificationError) as error:
        fetch(entry, tmp_path)
    assert LOCK_NAME in str(error.value) and str(path) in str(error.value)
    assert SHA in str(error.value)
    [status] = list_weights(tmp_path, [entry])
    assert status.state.startswith("corrupt: ") and "recorded" in status.state
    assert path.exists()  # a user's file is reported, never deleted


def test_changed_published_file_is_refused_against_the_lock(server: Server, tmp_path: Path) -> None:
    entry = make_entry([server.url()])
    fetch(entry, tmp_path)
    server.state.files["/model.bin"] = PAYLOAD[::-1]
    with pytest.raises(WeightsError, match="recorded in"):
        fetch(entry, tmp_path, force=True)
    assert (tmp_path / "model.bin").read_bytes() == PAYLOAD
    assert not (tmp_path / "model.bin.part").exists()


def test_manual_file_with_published_sha256_needs_no_network(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    entry = make_entry(["http://127.0.0.1:9/unreachable"], sha256=SHA)
    assert fetch(entry, tmp_path).path == tmp_path / "model.bin"
    assert verify(entry, tmp_path / "model.bin").basis == "sha256"


def test_manual_file_without_checksum_is_recorded_on_fetch(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    assert list_weights(tmp_path, [entry])[0].state == UNVERIFIED
    assert not (tmp_path / LOCK_NAME).exists()  # listing never writes
    fetch(entry, tmp_path)
    assert read_lock(tmp_path)["test-model"]["source"] == "found in the cache"
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED


def test_manual_file_of_the_wrong_size_is_reported(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(PAYLOAD[:-1])
    entry = make_entry(["http://127.0.0.1:9/unreachable"], size=len(PAYLOAD))
    with pytest.raises(VerificationError) as error:
        verify(entry, tmp_path / "model.bin")
    assert str(tmp_path / "model.bin") in str(error.value)
    assert f"size is {len(PAYLOAD) - 1} bytes, expected {len(PAYLOAD)}" in error.value.detail


def test_http_404_tells_what_to_do(server: Server, tmp_path: Path) -> None:
    url = server.url("/missing.bin")
    with pytest.raises(WeightsError) as error:
        fetch(make_entry([url]), tmp_path)
    message = str(error.value)
    assert "HTTP 404" in message and url in message
    assert str(tmp_path / "model.bin") in message and "masn weights list" in message
    assert visible(tmp_path) == []


def test_server_errors_are_retried_then_the_next_url_is_used(
    server: Server, tmp_path: Path
) -> None:
    server.state.status["/flaky.bin"] = 503
    entry = make_entry([server.url("/flaky.bin"), server.url()], sha256=SHA)
    assert fetch(entry, tmp_path).path.read_bytes() == PAYLOAD
    paths = [path for path, _ in server.state.requests]
    assert paths == ["/flaky.bin"] * (download.RETRIES + 1) + ["/model.bin"]


def test_web_page_instead_of_the_file_is_refused(server: Server, tmp_path: Path) -> None:
    server.state.content_type = "text/html; charset=utf-8"
    with pytest.raises(WeightsError, match="web page"):
        fetch(make_entry([server.url()]), tmp_path)
    assert visible(tmp_path) == []


def test_force_replaces_a_corrupt_file(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not the model")
    entry = make_entry([server.url()], sha256=SHA)
    with pytest.raises(VerificationError):
        fetch(entry, tmp_path)
    assert fetch(entry, tmp_path, force=True).path.read_bytes() == PAYLOAD


def test_concurrent_fetches_download_once(server: Server, tmp_path: Path) -> None:
    entry = make_entry([server.url()])
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch(entry, tmp_path).path))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "model.bin"] * 2
    assert len(server.state.requests) == 1


# ---------------------------------------------------------------- validation before pinning


def legacy_record(folder: Path, entry: WeightEntry, data: bytes) -> None:
    """A lock record as masn wrote it before validation existed (no "validated" mark)."""
    record = {
        "filename": entry.filename,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "source": "found in the cache",
        "recorded": "2024-01-01T00:00:00+00:00",
    }
    (folder / LOCK_NAME).write_text(json.dumps({"version": 1, "files": {entry.name: record}}))


def test_hand_placed_file_is_pinned_only_once_it_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    path = tmp_path / "model.bin"
    path.write_bytes(random.Random(1).randbytes(100_000))
    with pytest.raises(VerificationError) as error:
        fetch(entry, tmp_path)
    message = str(error.value)
    assert str(path) in message and "not a word followed by numbers" in message
    assert "masn weights fetch test-model" in message and "\n" not in message
    assert not (tmp_path / LOCK_NAME).exists()  # never pinned
    [status] = list_weights(tmp_path, [entry])
    assert status.state.startswith(f"{CORRUPT}: ") and "not a word followed" in status.state
    path.write_bytes(PAYLOAD)  # the real file replaces it
    assert fetch(entry, tmp_path).basis == "recorded"
    record = read_lock(tmp_path)["test-model"]
    assert record["sha256"] == SHA and record["source"] == "found in the cache"
    assert record["validated"]["format"] == "glove_text"
    assert record["validated"]["version"] == VALIDATION_VERSION
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED


def test_download_that_fails_validation_is_deleted_and_not_pinned(
    server: Server, tmp_path: Path
) -> None:
    server.state.files["/model.bin"] = b"<?xml version='1.0'?><Error>AccessDenied</Error>\n"
    with pytest.raises(WeightsError) as error:
        fetch(make_entry([server.url()]), tmp_path)
    message = str(error.value)
    assert "failed verification" in message and server.url() in message
    assert "not a word followed by numbers" in message and "was deleted" in message
    assert visible(tmp_path) == []  # no file, no part, no lock record


def test_mixed_glove_dimensions_fail_fetch_and_list(tmp_path: Path) -> None:
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    (tmp_path / "model.bin").write_bytes(PAYLOAD + b"short 0.1 0.2\n")
    with pytest.raises(VerificationError, match="does not hold 8 numbers as line 1"):
        fetch(entry, tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    assert "mixed dimensions" in list_weights(tmp_path, [entry])[0].state


def test_old_record_of_a_file_that_fails_validation_stops_saying_verified(
    tmp_path: Path,
) -> None:
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    bad = random.Random(2).randbytes(100_000)
    (tmp_path / "model.bin").write_bytes(bad)
    legacy_record(tmp_path, entry, bad)  # an older masn pinned it without reading it
    [status] = list_weights(tmp_path, [entry])
    assert status.state.startswith(f"{CORRUPT}: ") and "not a word followed" in status.state
    assert "validated" not in read_lock(tmp_path)["test-model"]  # listing writes nothing
    with pytest.raises(VerificationError, match="not a word followed by numbers"):
        fetch(entry, tmp_path)
    assert read_lock(tmp_path) == {}  # fetch dropped the record of the bad file
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    assert fetch(entry, tmp_path).basis == "recorded"
    assert read_lock(tmp_path)["test-model"]["sha256"] == SHA
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED


def test_old_record_that_differs_from_a_valid_file_is_replaced(tmp_path: Path) -> None:
    """The user hit the old bug: garbage pinned, then the real file placed over it."""
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    legacy_record(tmp_path, entry, random.Random(2).randbytes(100_000))
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    assert list_weights(tmp_path, [entry])[0].state == UNVERIFIED
    fetch(entry, tmp_path)
    record = read_lock(tmp_path)["test-model"]
    assert record["sha256"] == SHA and "validated" in record
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED


def test_old_record_of_a_good_file_is_validated_then_marked(tmp_path: Path) -> None:
    entry = make_entry(["http://127.0.0.1:9/unreachable"])
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    legacy_record(tmp_path, entry, PAYLOAD)
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED  # validated on the spot
    assert fetch(entry, tmp_path).basis == "lock file"
    record = read_lock(tmp_path)["test-model"]
    assert record["recorded"] == "2024-01-01T00:00:00+00:00"  # the first record is kept
    assert record["validated"]["format"] == "glove_text"


def test_a_validated_record_spares_validation_never_the_checksum(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = make_entry([server.url()])
    fetch(entry, tmp_path)
    hashed: list[Path] = []

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return file_sha256(path)

    def refuse(path: Path) -> None:
        raise AssertionError(f"validated {path} again")

    monkeypatch.setattr(download, "file_sha256", counting_sha256)
    monkeypatch.setitem(VALIDATORS, "glove_text", refuse)
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED
    assert fetch(entry, tmp_path).vouched
    assert hashed == [tmp_path / "model.bin"] * 2  # once per command
    monkeypatch.setattr(download, "VALIDATION_VERSION", VALIDATION_VERSION + 1)
    with pytest.raises(AssertionError, match="validated"):  # a newer validation reads it again
        list_weights(tmp_path, [entry])


def test_fetch_hashes_once_and_validates_once(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    validated: list[Path] = []
    real_validator = VALIDATORS["glove_text"]

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return file_sha256(path)

    def counting_validator(path: Path) -> object:
        validated.append(path)
        return real_validator(path)

    monkeypatch.setattr(download, "file_sha256", counting_sha256)
    monkeypatch.setitem(VALIDATORS, "glove_text", counting_validator)
    result = fetch(make_entry([server.url()]), tmp_path)
    assert hashed == validated == [tmp_path / "model.bin.part"]
    assert (result.path, result.sha256, result.basis) == (tmp_path / "model.bin", SHA, "recorded")
    assert (result.content.dim, result.content.vectors) == (8, PAYLOAD.count(b"\n"))


def test_empty_glove_zip_fails_fetch_and_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = get("glove-42b-300d")
    path = tmp_path / entry.filename
    no_members = tmp_path / "no-members.zip"
    zipfile.ZipFile(no_members, "w").close()
    for data, reason in (
        (b"", "is not a zip archive (0 bytes)"),
        (no_members.read_bytes(), "holds nothing: expected exactly one GloVe .txt file"),
    ):
        path.write_bytes(data)
        caplog.clear()
        assert commands.fetch_command([entry.name], tmp_path, force=False) == 1
        assert reason in caplog.text and str(path) in caplog.text
        assert not (tmp_path / LOCK_NAME).exists()
        assert commands.list_command(tmp_path) == 1
        output = capsys.readouterr().out
        assert re.search(rf"^{entry.name} .* corrupt: .*{re.escape(reason)}", output, re.M)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("glove.42B.300d.txt", PAYLOAD[:10_000].rsplit(b"\n", 1)[0] + b"\n")
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    assert read_lock(tmp_path)[entry.name]["validated"]["format"] == "glove_zip"
    assert commands.list_command(tmp_path) == 0
    output = capsys.readouterr().out
    assert re.search(rf"^{entry.name} .* verified$", output, re.M)


def test_every_format_has_a_validator() -> None:
    assert set(VALIDATORS) == FORMATS


# ---------------------------------------------------------------- bounded network waits


def test_worst_case_wait_of_a_silent_network_fits_the_budget() -> None:
    """Per URL: attempts and backoff waits stop once STALL_S passed without progress, and an
    attempt waits at most twice (connect, then the answer), each for at most half the budget
    left, so a URL on a network that never answers costs at most STALL_S."""
    per_url = download.STALL_S
    assert download.TIMEOUT_S <= 15 < per_url <= 30  # one full wait, then retries fit
    urls = sum(len(entry.urls) for entry in default_entries())
    assert urls * per_url <= 180, f"{urls} URLs x {per_url} s"


def test_silent_server_fails_each_url_within_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts connections (the kernel does: listen, never accept) and never
    answers: each URL is given up once STALL_S passed, whatever RETRIES allows."""
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(download, "STALL_S", 0.6)
    monkeypatch.setattr(download, "RETRIES", 100)
    monkeypatch.setattr(download, "BACKOFF_S", 0.05)
    with socket.create_server(("127.0.0.1", 0), backlog=32) as silent:
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        urls = [f"{base}/a.bin", f"{base}/b.bin"]
        started = time.monotonic()
        with pytest.raises(WeightsError) as error:
            fetch(make_entry(urls), tmp_path)
        elapsed = time.monotonic() - started
    assert 0.6 < elapsed < 2 * 0.6 + 0.5
    message = str(error.value)
    for url in urls:
        assert f"{url}: no answer within" in message
    assert "nothing received for 0.6 s" in message
    assert "Download it by hand" in message and str(tmp_path / "model.bin") in message
    assert visible(tmp_path) == []


@pytest.mark.parametrize("cause", ["refused", "tls", "dns"])
def test_errors_that_cannot_heal_fail_the_url_at_once(
    cause: str, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "BACKOFF_S", 30.0)  # a retry would show
    if cause == "refused":
        with socket.create_server(("127.0.0.1", 0)) as closed:
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/model.bin"
    elif cause == "tls":
        url = server.url().replace("http://", "https://")  # TLS to a plain HTTP server
    else:

        def unknown(*args: object, **kwargs: object) -> None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", unknown)
        url = "http://weights.example.invalid/model.bin"
    started = time.monotonic()
    with pytest.raises(WeightsError, match="cannot connect"):
        fetch(make_entry([url]), tmp_path)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("status", "retried"), [(403, False), (410, False), (429, True), (520, True)]
)
def test_http_errors_retried_only_when_they_can_heal(
    status: int, retried: bool, server: Server, tmp_path: Path
) -> None:
    server.state.status["/model.bin"] = status
    with pytest.raises(WeightsError, match=f"HTTP {status}"):
        fetch(make_entry([server.url()]), tmp_path)
    assert len(server.state.requests) == (download.RETRIES + 1 if retried else 1)


def test_a_transfer_that_makes_progress_keeps_resuming(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer breaks off, slowly, but gets further: neither RETRIES nor the STALL_S
    budget (shorter than the whole transfer) ends it."""
    monkeypatch.setattr(download, "RETRIES", 1)
    monkeypatch.setattr(download, "STALL_S", 0.5)
    server.state.drops, server.state.drop_after, server.state.delay = 100, 400_000, 0.1
    started = time.monotonic()
    assert fetch(make_entry([server.url()], sha256=SHA), tmp_path).path.read_bytes() == PAYLOAD
    assert time.monotonic() - started > download.STALL_S
    assert len(server.state.requests) == -(-len(PAYLOAD) // 400_000)


def test_list_weights_states(tmp_path: Path) -> None:
    entries = [
        make_entry(["http://x/a"], name="absent", filename="absent.bin"),
        make_entry(["http://x/b"], name="unverified", filename="unverified.bin"),
        make_entry(["http://x/c"], name="good", filename="good.bin", sha256=SHA),
        make_entry(["http://x/d"], name="bad", filename="bad.bin", sha256=SHA),
    ]
    (tmp_path / "absent.bin.part").write_bytes(b"12345")
    for name in ("unverified.bin", "good.bin"):
        (tmp_path / name).write_bytes(PAYLOAD)
    (tmp_path / "bad.bin").write_bytes(PAYLOAD[:-1])
    states = {s.entry.name: (s.state, s.partial_bytes) for s in list_weights(tmp_path, entries)}
    assert states["absent"] == (MISSING, 5)
    assert states["unverified"] == (UNVERIFIED, 0)
    assert states["good"] == (VERIFIED, 0)
    assert states["bad"][0].startswith("corrupt: sha256 is ")


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("MASN_WEIGHTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "masn"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert cache_dir() == tmp_path / "home" / ".cache" / "masn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "masn"
    package = Path(masn.__file__).resolve().parent
    assert package not in cache_dir().resolve().parents  # never inside the installed package


def test_cache_that_is_a_file_or_cannot_be_created_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "weights"
    file.write_text("not a folder")
    monkeypatch.setenv("MASN_WEIGHTS_DIR", str(file))
    for call in (
        cache_dir,
        lambda: commands.list_command(None),
        lambda: commands.fetch_command(None, None, force=False),
    ):
        with pytest.raises(UserError, match=r"weights cache .*weights is a file, not a folder"):
            call()
    assert main(["weights", "list"]) == 2  # the CLI prints the one line, no traceback
    monkeypatch.delenv("MASN_WEIGHTS_DIR")
    with pytest.raises(UserError, match="is a file") as error:
        commands.fetch_command(["glove-42b-300d"], file, force=False)  # --cache FILE
    with pytest.raises(UserError, match="is a file"):
        commands.list_command(file)
    with pytest.raises(UserError, match=r"cannot create the weights cache .*--cache"):
        commands.fetch_command(["glove-42b-300d"], file / "sub", force=False)
    assert "\n" not in str(error.value)
    assert file.read_text() == "not a folder"


def test_manifest_is_sane() -> None:
    entries = load_manifest()
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.filename for e in entries}) == len(entries)
    for entry in entries:
        assert entry.urls and entry.role in ROLES and entry.format in FORMATS
        assert entry.licence and entry.description and entry.page.startswith("https://")
    assert {e.filename for e in default_entries()} == {
        "faster_rcnn_from_caffe_attr_original.pkl",
        "i3d_baseline_32x2_IN_pretrain_400k.pkl",
        "resnet152-394f9c45.pth",
        "glove.42B.300d.zip",
    }
    assert {e.role for e in default_entries()} == ROLES
    formats = {e.format for e in entries}
    assert formats >= {"detectron2_pkl", "hf_frcnn", "milvlg_bua", "caffe2_i3d"}
    assert formats >= {"pytorchvideo_i3d", "torchvision_resnet", "glove_zip"}
    assert get("resnet152-imagenet-v1").sha256_prefix == "394f9c45"
    assert get("resnet152-imagenet-v2").sha256_prefix == "f82ba261"


def test_every_model_format_has_a_converter() -> None:
    from masn.weights.convert import CONVERTERS

    models = {e.format for e in load_manifest() if e.role != "glove"}
    assert models <= set(CONVERTERS)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as error:
        get("resnet-9000")
    assert "resnet152-imagenet-v1" in error.value.args[0]


def test_invalid_manifest_entries_are_rejected() -> None:
    with pytest.raises(ValueError, match="role"):
        make_entry(["http://x/a"], role="vae")
    with pytest.raises(ValueError, match="sha256"):
        make_entry(["http://x/a"], sha256="ABC")
    with pytest.raises(ValueError, match="bare file name"):
        make_entry(["http://x/a"], filename="../evil.bin")


def test_fetch_command(
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert commands.fetch_command(["no-such-weights"], tmp_path, force=False) == 2
    assert "glove-42b-300d" in caplog.text
    good = make_entry([server.url()], sha256=SHA, role="glove", format="glove_text")
    bad = make_entry([server.url("/gone.bin")], name="gone", filename="gone.bin")
    monkeypatch.setattr(commands, "get", {"test-model": good, "gone": bad}.__getitem__)
    assert commands.fetch_command(["test-model"], tmp_path, force=False) == 0
    assert commands.fetch_command(["test-model", "gone"], tmp_path, force=False) == 1


def test_list_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.list_command(tmp_path) == 0
    output = capsys.readouterr().out
    for entry in load_manifest():
        assert re.search(rf"^{re.escape(entry.name)} .* missing$", output, re.MULTILINE)
    assert str(tmp_path) in output
