"""`masn weights list`: missing (with a partial download), unverified, verified, corrupt."""

from __future__ import annotations

from pathlib import Path

from masn.weights.status import MISSING, UNVERIFIED, VERIFIED, list_weights
from tests.weights.http_server import PAYLOAD, SHA, make_entry


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
