"""Weights manifest, verified downloads (against a local HTTP server), lock file, cache states."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from masn.weights import commands, download
from masn.weights.download import (
    LOCK_NAME,
    VerificationError,
    WeightsError,
    cache_dir,
    fetch,
    read_lock,
    verify,
)
from masn.weights.manifest import FORMATS, ROLES, WeightEntry, default_entries, get, load_manifest
from masn.weights.status import MISSING, UNVERIFIED, VERIFIED, list_weights

PAYLOAD = random.Random(0).randbytes(3 << 20)  # three download chunks
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
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 file server with ``Range: bytes=N-`` support and scripted failures."""

    def do_GET(self) -> None:
        state: ServerState = self.server.state
        requested_range = self.headers.get("Range")
        state.requests.append((self.path, requested_range))
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
        "role": "detector",
        "format": "detectron2_pkl",
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
    path = fetch(make_entry([server.url()], sha256=SHA, size=len(PAYLOAD)), tmp_path)
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
    path = fetch(make_entry([server.url()], sha256_prefix=SHA[:8]), tmp_path)
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
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path)
    assert server.state.requests == [("/model.bin", None), ("/model.bin", f"bytes={DROP_AT}-")]
    assert path.read_bytes() == PAYLOAD


def test_partial_file_of_an_earlier_run_is_resumed(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD[:DROP_AT])
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path)
    assert server.state.requests == [("/model.bin", f"bytes={DROP_AT}-")]
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_file_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    path = fetch(make_entry([server.url()], sha256=SHA), tmp_path)
    assert server.state.requests == [("/model.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.state.drops = 1
    server.state.ignore_range = True
    with caplog.at_level(logging.INFO, logger="masn.weights.download"):
        path = fetch(make_entry([server.url()], sha256=SHA), tmp_path)
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
    path = fetch(entry, tmp_path)
    record = json.loads((tmp_path / LOCK_NAME).read_text())["files"]["test-model"]
    assert (record["sha256"], record["size"], record["source"]) == (SHA, len(PAYLOAD), server.url())
    assert fetch(entry, tmp_path) == path  # later use: verified against the record
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
    assert fetch(entry, tmp_path) == tmp_path / "model.bin"
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
    assert fetch(entry, tmp_path).read_bytes() == PAYLOAD
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
    assert fetch(entry, tmp_path, force=True).read_bytes() == PAYLOAD


def test_concurrent_fetches_download_once(server: Server, tmp_path: Path) -> None:
    entry = make_entry([server.url()])
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch(entry, tmp_path))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "model.bin"] * 2
    assert len(server.state.requests) == 1


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
    assert cache_dir() == Path(download.__file__).resolve().parent / "cache"


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
