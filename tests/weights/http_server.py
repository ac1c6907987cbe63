"""A local HTTP file server with scripted failures, and the GloVe text it serves.

The test entries are GloVe text files (the ``glove_text`` format, validated like every format
before a file is trusted), so downloads, verification and the commands run their real checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from masn.weights.manifest import WeightEntry


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
