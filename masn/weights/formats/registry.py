"""The registry of published weights formats: the manifest, the validator and the installer
look a format up here, and each format registers itself next to its converter.

A format (the manifest's ``format`` ids) is: its name, the role it fills (one of :data:`ROLES`),
the function that reads a published file, and for a role with several backbones the one its
state dict fills (``layout``: "nonlocal" or "pytorchvideo" for the I3D). For a network format
that function is the converter into our module's state dict, which checks every key and shape
and so is also the validator; a GloVe format only validates (the vectors are read where they
are). Torch-free: the names are read from the source of ``masn/weights/formats/`` (see
:mod:`masn.registry`, which also says how to add a format), and a format's module is imported
on its first lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from masn.registry import Registry

if TYPE_CHECKING:
    from masn.weights.formats.source_tensors import StateDict

# The extractor's networks, each installed as <cache>/<role>.pt, and GloVe's word vectors.
NETWORK_ROLES = ("detector", "resnet152", "i3d")
ROLES = frozenset({*NETWORK_ROLES, "glove"})

Reader = Callable[[Path], Any]
R = TypeVar("R", bound=Reader)


@dataclass(frozen=True)
class WeightsFormat:
    """One published file layout.

    validator: reads the whole file and returns what it holds (our state dict, a GloVe file's
    summary); raises ``InvalidInput`` (or ``UnsafePickleError``) naming the file otherwise.
    converter: the same function for a network format, None for one never installed.
    layout: the backbone of ``role`` its state dict fills (None where the role has one).
    """

    name: str
    role: str
    validator: Reader
    converter: Callable[[Path], StateDict] | None = None
    layout: str | None = None


FORMATS: Registry[WeightsFormat] = Registry(
    "weights format", "masn.weights.formats", "weights_format"
)


def weights_format(
    name: str, *, role: str, layout: str | None = None, installed: bool = True
) -> Callable[[R], R]:
    """Registers the decorated function as the reader of format ``name`` of ``role``.

    installed: it converts a file into our module's state dict (installed as
    ``<cache>/<role>.pt``) and validates it by doing so; else it only validates.
    """
    if role not in ROLES:
        raise ValueError(f"weights format {name!r}: role {role!r} is not one of {sorted(ROLES)}")

    def register(read: R) -> R:
        converter = read if installed else None
        FORMATS.add(name, WeightsFormat(name, role, read, converter, layout), role=role)
        return read

    return register


def format_names() -> tuple[str, ...]:
    """Every format's name (imports none of their modules)."""
    return FORMATS.names()


def get_format(name: str) -> WeightsFormat:
    """The format ``name``; an UnknownName listing the known ones."""
    return FORMATS.get(name)


def convert(format_id: str, path: str | Path) -> StateDict:
    """The state dict of our module held by the file at ``path`` in format ``format_id``."""
    known = format_names()
    converter = get_format(format_id).converter if format_id in known else None
    if converter is None:
        converters = [name for name in known if get_format(name).converter is not None]
        raise ValueError(
            f"no converter for weights format {format_id!r}; known: {', '.join(converters)}"
        )
    return converter(Path(path))
