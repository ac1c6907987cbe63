"""The weights cache folder: where it is, and one clear line when it cannot serve."""

from __future__ import annotations

from pathlib import Path

import pytest

import masn
from masn import caller
from masn.errors import UserError
from masn.pipeline.cli import main
from masn.weights import commands
from masn.weights.cache import cache_dir


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
        # The message named --cache, the flag's deprecated name; Python callers get weights=.
        with pytest.raises(
            UserError, match=r"weights cache .*weights is a file, not a folder: point weights or "
        ):
            call()
        with (
            caller.command_line(),
            pytest.raises(UserError, match=r"is a file, not a folder: point --weights "),
        ):
            call()
    assert main(["weights", "list"]) == 2  # the CLI prints the one line, no traceback
    monkeypatch.delenv("MASN_WEIGHTS_DIR")
    with pytest.raises(UserError, match="is a file") as error:
        commands.fetch_command(["glove-42b-300d"], file, force=False)  # --weights FILE
    with pytest.raises(UserError, match="is a file"):
        commands.list_command(file)
    with pytest.raises(UserError, match=r"cannot create the weights cache .*with weights or"):
        commands.fetch_command(["glove-42b-300d"], file / "sub", force=False)
    assert "\n" not in str(error.value)
    assert file.read_text() == "not a folder"
