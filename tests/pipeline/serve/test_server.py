"""Starting `masn serve`: the extra it needs, its settings, the address it binds and says."""

from __future__ import annotations

import importlib.util
import logging
import re
import socket
from pathlib import Path

import pytest
import uvicorn

from masn.errors import InvalidInput
from masn.pipeline.cli import main
from masn.pipeline.serve import server
from masn.pipeline.serve.settings import ServeSettings
from tests.pipeline.serve.test_catalogue import tiny_store


def test_without_the_serve_extra_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
):
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "starlette" else found(name, *args),
    )
    assert main(["serve", "--store", str(tmp_path / "x.h5")]) == 2
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "masn serve needs its web libraries (starlette missing): pip install 'masn[serve]'"
    )


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--port", "70000"], "--port must lie in 0..65535"),
        (["--upload-mb", "0"], "--upload-mb must be at least 1"),
        (["--page-size", "0"], "--page-size must lie in 1..1000"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_settings_out_of_range_are_one_line(flags, said, caplog, tmp_path: Path):
    assert main(["serve", "--store", str(tmp_path / "x.h5"), *flags]) == 2
    assert said in caplog.text


def test_a_missing_store_or_run_is_refused_before_anything_listens(caplog, tmp_path: Path):
    assert main(["serve", "--store", str(tmp_path / "x.h5"), "--port", "0"]) == 2
    assert f"no feature store at {tmp_path / 'x.h5'}" in caplog.text
    store = tiny_store(tmp_path / "s.h5", ["a.mp4"])
    assert main(["serve", "--store", str(store), "--run", str(tmp_path / "nope")]) == 2
    assert "no such run folder or checkpoint" in caplog.text


def test_loopback_hosts_are_local_and_others_are_not():
    assert all(server.is_local(h) for h in ("127.0.0.1", "127.0.0.9", "::1", "[::1]", "localhost"))
    assert not any(server.is_local(h) for h in ("0.0.0.0", "192.168.1.5", "::", "example.org"))


def test_a_taken_port_says_to_choose_another():
    taken = server.bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(InvalidInput, match=f"cannot listen on 127.0.0.1:{port}"):
            server.bind("127.0.0.1", port)
    finally:
        taken.close()


def test_serve_prints_its_url_and_warns_for_a_host_others_reach(
    monkeypatch: pytest.MonkeyPatch, caplog, capsys, tmp_path: Path
):
    store = tiny_store(tmp_path / "s.h5", ["a.mp4"])
    bound: list[socket.socket] = []
    original = server.bind

    def local_bind(host: str, port: int) -> socket.socket:  # never open a public port in a test
        bound.append(original("127.0.0.1", 0))
        return bound[-1]

    monkeypatch.setattr(server, "bind", local_bind)
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets))
    assert server.serve(ServeSettings(store=store, host="192.0.2.7", port=0)) == 0
    assert served == [bound] and bound[0].fileno() == -1  # served, then closed
    printed = capsys.readouterr().out
    assert re.fullmatch(r"masn serve: http://127\.0\.0\.1:\d+/  \(Ctrl\+C stops it\)\n", printed)
    assert "masn serve listens on 192.0.2.7: anyone who can reach this machine" in caplog.text
