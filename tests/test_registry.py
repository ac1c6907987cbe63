"""The registry mechanism: names from installed entry points without importing their modules,
things imported on first lookup and checked against their decorator, toy entries added and
removed, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from masn.registry import Registry, entry_points

MODULE = """
import sys
from masn.registry import Registry

REGISTRY = Registry("toy", "toyregistry.things", "register")


def register(name):
    def add(thing):
        REGISTRY.add(name, thing)
        return thing
    return add


@register("small")
def small():
    return "small network"


def undecorated():
    return "no decorator"
"""
ENTRY_POINTS = """
[toyregistry.things]
small = toyregistry:small
plain = toyregistry:undecorated

[toyregistry.objects]
big = toyregistry:small
"""


def install_toy(root: Path, name: str = "toyregistry", entry_points: str = ENTRY_POINTS) -> None:
    """An installed distribution: its module and a dist-info folder with its entry points."""
    (root / "toyregistry.py").write_text(textwrap.dedent(MODULE))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def run(root: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a child Python that sees the distributions under ``root``."""
    code = f"import sys; sys.path.insert(0, {str(root)!r})\n" + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_names_come_from_entry_points_and_things_from_a_lazy_import(tmp_path: Path) -> None:
    install_toy(tmp_path)
    result = run(
        tmp_path,
        """
        from masn.registry import Registry, entry_points
        things = Registry("toy", "toyregistry.things", "register")
        print(things.names(), "toyregistry" in sys.modules)
        objects = Registry("object", "toyregistry.objects")
        print(objects.get("big")(), "toyregistry" in sys.modules)
        import toyregistry
        print(toyregistry.REGISTRY.get("small")())
        try:
            toyregistry.REGISTRY.get("plain")
        except TypeError as error:
            print(error)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "('small', 'plain') False"  # listing imported nothing
    assert lines[1] == "small network True"  # no decorator: the object is the entry
    assert lines[2] == "small network"
    assert lines[3] == (
        "the entry point plain = 'toyregistry:undecorated' (group toyregistry.things) names an "
        "object that is not decorated with @register('plain', ...)"
    )


def test_a_name_declared_by_two_packages_is_refused(tmp_path: Path) -> None:
    install_toy(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    install_toy(other, "othertoys")
    result = run(
        tmp_path,
        f"""
        sys.path.insert(0, {str(other)!r})
        from masn.registry import Registry
        Registry("toy", "toyregistry.things").names()
        """,
    )
    assert result.returncode != 0
    assert "is declared in the entry point group toyregistry.things by both othertoys and" in (
        result.stderr
    )


def test_toy_entries_are_added_and_removed() -> None:
    registry: Registry[str] = Registry("toy", "masn.tests.no-such-group", "register")
    assert registry.names() == ()
    registry.add("toy", "a toy")
    assert registry.names() == ("toy",) and registry.get("toy") == "a toy"
    with pytest.raises(ValueError, match="toy 'toy' is registered twice"):
        registry.add("toy", "again")
    registry.remove("toy")
    assert registry.names() == ()
    with pytest.raises(KeyError, match="unknown toy 'toy'; known: none"):
        registry.get("toy")


def test_masn_declares_its_own_entries_first() -> None:
    points = entry_points("masn.backbones.motion")
    assert list(points) == ["nonlocal", "pytorchvideo"]
    assert all(point.dist.name == "masn" for point in points.values())
