"""Resumable downloads against a local HTTP server: checksums after the transfer, resumed and
restarted transfers, retries, bounded network waits, several URLs, concurrent fetches."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from masn.weights import download
from masn.weights.download import fetch
from masn.weights.manifest import default_entries
from masn.weights.verification import (
    VerificationError,
    WeightsError,
)
from tests.weights.http_server import DROP_AT, PAYLOAD, SHA, Server, make_entry, visible


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
