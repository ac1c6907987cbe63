"""Names of the detector's 1600 Visual Genome object and 400 attribute classes."""

from __future__ import annotations

from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data")


@cache
def _names(file: str) -> tuple[str, ...]:
    lines = (DATA / file).read_text(encoding="utf-8").splitlines()
    return tuple(line.split(",")[0].strip() for line in lines)


def object_names() -> tuple[str, ...]:
    """Display name of each object label (index = the label stored in a feature store)."""
    return _names("vg_objects.txt")


def attribute_names() -> tuple[str, ...]:
    """Display name of each attribute label."""
    return _names("vg_attributes.txt")
