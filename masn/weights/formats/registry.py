"""The registry of published weights formats: the manifest, the validator and the installer
look a format up here, and each format registers itself next to its converter.

A format (the manifest's ``format`` ids) is: its name, the role it fills (a network role, or
"glove" for word vectors), the function that reads a published file, and the network of that
role its state dict fills (``backbone``). For a network format that function is the converter
into our module's state dict, which checks every key and shape and so is also the validator; a
GloVe format only validates (the vectors are read where they are). Formats are entry points of
``masn.weights_formats`` (:mod:`masn.registry`), so names list without importing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from masn.registry import Registry
from masn.roles import ROLES as NETWORK_ROLES

if TYPE_CHECKING:
    from masn.weights.formats.source_tensors import StateDict

# The extractor's network roles, and GloVe's word vectors.
WORD_VECTORS = "glove"
ROLES = (*NETWORK_ROLES, WORD_VECTORS)

Reader = Callable[[Path], Any]
R = TypeVar("R", bound=Reader)


@dataclass(frozen=True)
class WeightsFormat:
    """One published file layout.

    validator: reads the whole file and returns what it holds (our state dict, a GloVe file's
    summary); raises ``InvalidInput`` (or ``UnsafePickleError``) naming the file otherwise.
    converter: the same function for a network format, None for one never installed.
    backbone: the network of ``role`` its state dict fills (None for word vectors).
    """

    name: str
    role: str
    validator: Reader
    converter: Callable[[Path], StateDict] | None = None
    backbone: str | None = None


FORMATS: Registry[WeightsFormat] = Registry(
    "weights format", "masn.weights_formats", "weights_format"
)


def weights_format(
    name: str, *, role: str, backbone: str | None = None, installed: bool = True
) -> Callable[[R], R]:
    """Registers the decorated function as the reader of format ``name`` of ``role``.

    installed: it converts a file into the state dict of the ``role`` network ``backbone``
    (installed in the weights cache) and validates it by doing so; else it only validates.
    """
    if role not in ROLES:
        raise ValueError(f"weights format {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    if installed and backbone is None:
        raise ValueError(f"weights format {name!r}: name the {role} network it fills (backbone=)")

    def register(read: R) -> R:
        converter = read if installed else None
        FORMATS.add(name, WeightsFormat(name, role, read, converter, backbone))
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
