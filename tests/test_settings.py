"""Settings dataclasses to YAML/JSON and back (masn/settings.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from masn import settings
from masn.errors import InvalidInput, MissingInput


@dataclass(frozen=True)
class Inner:
    size: int = 600
    """A nested setting."""


@dataclass(frozen=True)
class Outer:
    name: str
    out: Path | None = None
    mode: Literal["fixed", "reference"] = "fixed"
    cases: tuple[str, ...] = ("a", "b")
    rate: float = 1e-4
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise InvalidInput(f"rate must be positive, got {self.rate}")


def test_dump_then_load_is_the_identity_and_dump_is_stable(tmp_path: Path) -> None:
    original = Outer("run", Path("runs/x"), "reference", ("c",), 3e-4, Inner(96))
    text = settings.dump(original)
    assert text.splitlines()[:3] == ["name: run", "out: runs/x", "mode: reference"]
    path = tmp_path / "run.yaml"
    path.write_text(text)
    loaded = settings.load(Outer, path)
    assert loaded == original
    assert settings.dump(loaded) == text
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps(settings.to_dict(original)))
    assert settings.load(Outer, as_json) == original
    assert settings.to_dict(original)["inner"] == {"size": 96}


def test_missing_fields_keep_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("name: x\ninner:\n  size: 12\n")
    assert settings.load(Outer, path) == Outer("x", inner=Inner(12))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nbogus: 1\n", r"unknown setting\(s\) bogus; known: name, out, mode"),
        ("name: x\nmode: other\n", r"mode"),
        ("name: x\nrate: -1\n", r"rate must be positive"),
        ("name: [x\n", r"bad\.yaml:\d+: "),
        ("- 1\n- 2\n", r"expected a mapping"),
        ("mode: fixed\n", r"name"),
        # A value of the wrong type names the key and the type wanted (a list or a mapping
        # where a path goes was a TypeError; a text where a list goes was split into letters).
        ("name: x\nout: [a, b]\n", r'field "out" - should be a path \(text\) instead of .*"list"'),
        ("name: x\nout: {a: 1}\n", r'field "out" - should be a path \(text\) instead of .*"dict"'),
        ("name: x\ncases: abc\n", r'field "cases" - should be a list instead of .*"str"'),
        ("name: x\ninner: {size: big}\n", r'field "inner.size" - should be "int"'),
    ],
)
def test_bad_files_are_one_line_user_errors_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message) as error:
        settings.load(Outer, path)
    assert "\n" not in str(error.value) and "bad.yaml" in str(error.value)


def test_absent_binary_and_folder_configs(tmp_path: Path) -> None:
    with pytest.raises(MissingInput, match="no config file"):
        settings.load(Outer, tmp_path / "none.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        settings.load(Outer, binary)
    with pytest.raises(InvalidInput, match="is a folder"):
        settings.load(Outer, tmp_path)


def test_write_replaces_the_file(tmp_path: Path) -> None:
    path = settings.write(Outer("a"), tmp_path / "sub" / "config.yaml")
    settings.write(Outer("b"), path)
    assert settings.load(Outer, path).name == "b"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]
