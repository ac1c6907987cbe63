"""`masn weights fetch` and `masn weights list`: exit codes, what they print, and files that fail
validation (a hand-placed detector, an empty GloVe zip) never pinned nor installed."""

from __future__ import annotations

import logging
import random
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from masn.weights import commands, verification
from masn.weights.formats.registry import get_format
from masn.weights.installed import read_installed
from masn.weights.manifest import get, load_manifest
from masn.weights.status import CORRUPT, VERIFIED, list_weights
from masn.weights.verification import (
    LOCK_NAME,
    file_sha256,
    read_lock,
)
from tests.weights.http_server import PAYLOAD, SHA, Server, make_entry


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
    # SIZE: what is known of a missing file: what the publisher states (about), or unknown.
    for name, size in [
        ("resnet152-imagenet-v1", "~230.434 MiB"),
        ("glove-42b-300d", "~1.75 GB"),
        ("vg-frcnn-hf", "unknown"),
    ]:
        assert re.search(rf"^{name} .* {size} +missing$", output, re.MULTILINE), name


def test_list_shows_the_exact_size_or_the_files(tmp_path: Path, monkeypatch, capsys) -> None:
    exact = make_entry(["http://127.0.0.1/model.bin"], size=3 * 1024**2, stated_size="3.1 MB")
    monkeypatch.setattr(commands, "list_weights", lambda folder: list_weights(folder, [exact]))
    commands.list_command(tmp_path)
    assert re.search(r"^test-model .* 3\.0 MiB +missing$", capsys.readouterr().out, re.MULTILINE)
    (tmp_path / "model.bin").write_bytes(b"x" * 2048)
    commands.list_command(tmp_path)
    assert re.search(r"^test-model .* 2\.0 KiB ", capsys.readouterr().out, re.MULTILINE)


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


def test_hand_placed_detector_is_validated_before_it_is_pinned(
    tmp_path, files, detector, monkeypatch, caplog, capsys, swap_validator
) -> None:
    """A random file placed by hand as the paper's detector is never pinned, fetch and list
    report it; the published file (synthetic, same format) placed there then passes, is pinned,
    converted and installed, each file read and hashed once."""
    entry = get("vg-frcnn-attr-10-100")  # its URL is never contacted: the file is present
    path = tmp_path / entry.filename
    path.write_bytes(random.Random(0).randbytes(100_000))
    with caplog.at_level(logging.ERROR):
        assert commands.fetch_command([entry.name], tmp_path, force=False) == 1
    assert f"{path} is truncated or not a pickle" in caplog.text
    assert f"`masn weights fetch {entry.name}`" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # never pinned
    assert not (tmp_path / "detector.pt").exists()
    [status] = list_weights(tmp_path, [entry])
    assert status.state.startswith(f"{CORRUPT}: ") and "not a pickle" in status.state
    assert commands.list_command(tmp_path) == 1
    assert re.search(rf"^{entry.name} .* corrupt: ", capsys.readouterr().out, re.MULTILINE)

    shutil.copyfile(files["detectron2_pkl"][0], path)
    hashed, read = [], []
    monkeypatch.setattr(verification, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    converter = get_format(entry.format).converter
    swap_validator(entry.format, lambda p: read.append(p) or converter(p))
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    assert hashed == read == [path]
    record = read_lock(tmp_path)[entry.name]
    assert record["sha256"] == file_sha256(path)
    assert record["validated"]["format"] == "detectron2_pkl"
    state, installed = read_installed(tmp_path, "detector", "vg-frcnn")
    assert installed.sha256 == record["sha256"] and installed.source == entry.name
    detector.load_state_dict(state, strict=True)
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED
    assert read == [path]  # the lock vouches for it: listing hashes, never reads it again
