"""The registry mechanism: names read from a package's source without importing it, things
imported on first lookup, toy entries added and removed, clear errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from masn.registry import Registry, declarations

PLUGIN = """
from toyplugins_{tag} import register

@register("small", role="motion", size=1)
def small():
    return "small network"

@register("large", role="appearance")
class Large:
    pass
"""
PACKAGE = """
from masn.registry import Registry

REGISTRY = Registry("toy", "toyplugins_{tag}", "register")


def register(name, **options):
    def add(thing):
        REGISTRY.add(name, thing, **options)
        return thing
    return add
"""


def make_package(root: Path, tag: str, **modules: str) -> str:
    package = root / f"toyplugins_{tag}"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE.format(tag=tag)))
    for name, text in modules.items():
        (package / f"{name}.py").write_text(textwrap.dedent(text.format(tag=tag)))
    return package.name


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_names_come_from_the_source_and_things_from_a_lazy_import(root: Path) -> None:
    name = make_package(root, "lazy", plugins=PLUGIN)
    registry = __import__(name).REGISTRY
    assert registry.names() == ("small", "large")
    assert registry.names(role="motion") == ("small",)
    assert f"{name}.plugins" not in sys.modules  # listing imported nothing
    assert registry.get("small")() == "small network"
    assert f"{name}.plugins" in sys.modules
    [small, large] = declarations(name, "register")
    assert (small.module, dict(small.options)) == (f"{name}.plugins", {"role": "motion", "size": 1})
    assert large.name == "large"


def test_toy_entries_are_added_and_removed(root: Path) -> None:
    registry: Registry[str] = __import__(make_package(root, "toys", plugins=PLUGIN)).REGISTRY
    registry.add("toy", "a toy", role="motion")
    assert registry.names(role="motion") == ("small", "toy") and registry.get("toy") == "a toy"
    with pytest.raises(ValueError, match="toy 'toy' is registered twice"):
        registry.add("toy", "again")
    registry.remove("toy")
    assert "toy" not in registry.names()
    with pytest.raises(KeyError, match="unknown toy 'toy'; known: small, large"):
        registry.get("toy")


def test_declarations_must_be_literal_and_unique(root: Path) -> None:
    computed = make_package(root, "computed", plugins='@register("a" + "b")\ndef f(): pass\n')
    with pytest.raises(ValueError, match=r"plugins\.py:1: @register takes one name .* literal"):
        declarations(computed, "register")
    twice = make_package(root, "twice", one=PLUGIN, two=PLUGIN)
    with pytest.raises(ValueError, match="declares 'large', 'small' more than once"):
        declarations(twice, "register")
