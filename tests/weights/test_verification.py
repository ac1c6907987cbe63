"""Verification of weight files: published checksums and prefixes, the lock file (first-use
pinning, changed files, records of older versions), and validation before a file is pinned."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from masn.weights import verification
from masn.weights.download import fetch
from masn.weights.manifest import WeightEntry
from masn.weights.status import CORRUPT, UNVERIFIED, VERIFIED, list_weights
from masn.weights.validate import VALIDATION_VERSION
from masn.weights.verification import (
    LOCK_NAME,
    VerificationError,
    WeightsError,
    file_sha256,
    read_lock,
    verify,
)
from tests.weights.http_server import PAYLOAD, SHA, Server, make_entry, visible


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
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap_validator
) -> None:
    entry = make_entry([server.url()])
    fetch(entry, tmp_path)
    hashed: list[Path] = []

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return file_sha256(path)

    def refuse(path: Path) -> None:
        raise AssertionError(f"validated {path} again")

    monkeypatch.setattr(verification, "file_sha256", counting_sha256)
    swap_validator("glove_text", refuse)
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED
    assert fetch(entry, tmp_path).vouched
    assert hashed == [tmp_path / "model.bin"] * 2  # once per command
    monkeypatch.setattr(verification, "VALIDATION_VERSION", VALIDATION_VERSION + 1)
    with pytest.raises(AssertionError, match="validated"):  # a newer validation reads it again
        list_weights(tmp_path, [entry])


def test_fetch_hashes_once_and_validates_once(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap_validator
) -> None:
    hashed: list[Path] = []
    validated: list[Path] = []

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return file_sha256(path)

    def counting_validator(path: Path) -> object:
        validated.append(path)
        return real_validator(path)

    monkeypatch.setattr(verification, "file_sha256", counting_sha256)
    real_validator = swap_validator("glove_text", counting_validator)
    result = fetch(make_entry([server.url()]), tmp_path)
    assert hashed == validated == [tmp_path / "model.bin.part"]
    assert (result.path, result.sha256, result.basis) == (tmp_path / "model.bin", SHA, "recorded")
    assert (result.content.dim, result.content.vectors) == (8, PAYLOAD.count(b"\n"))
