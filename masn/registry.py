"""Registries: the networks, weights formats and datasets that names stand for.

Entries are declared as entry points, Python's standard plugin mechanism, so that masn and any
separately installed package add them the same way, in their ``pyproject.toml``::

    [project.entry-points."masn.backbones.motion"]
    my-i3d = "my_package.networks:my_i3d"

Names list from the installed packages' metadata without importing them (the command line
offers the choices without loading torch); an entry's module is imported on its first lookup.
Where a registry has a decorator (``@backbone``, ``@weights_format``), the object an entry point
names must carry it, with the same name: the decorator says what the object is, the entry
point where to find it. Tests add toy entries in-process with :meth:`Registry.add` and take
them out with :meth:`Registry.remove`. How to add each kind: docs/extending.md.
"""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Generic, TypeVar

from masn.errors import UnknownName

T = TypeVar("T")
OWN_DISTRIBUTION = "masn"


class Registry(Generic[T]):
    """Names -> things of one ``kind``, declared as entry points of ``group``.

    decorator: the decorator that registers an entry when its module is imported (None: the
    object the entry point names is the entry itself).
    """

    def __init__(self, kind: str, group: str, decorator: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self.decorator = decorator
        self._added: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        """Registers ``item`` as ``name`` (decorators call this when their module is imported)."""
        if name in self._added:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._added[name] = item

    def remove(self, name: str) -> None:
        """Takes ``name`` out (a test's toy entry); a KeyError if it was never added."""
        del self._added[name]

    def names(self) -> tuple[str, ...]:
        """Every name: masn's own entries first, then other packages', then
        those added in this process. Imports nothing."""
        declared = tuple(entry_points(self.group))
        return declared + tuple(name for name in self._added if name not in declared)

    def get(self, name: str) -> T:
        """The entry ``name``, importing the module its entry point names on first use."""
        if name not in self._added:
            point = entry_points(self.group).get(name)
            if point is None:
                known = ", ".join(self.names()) or "none"
                raise UnknownName(f"unknown {self.kind} {name!r}; known: {known}")
            loaded = point.load()
            if self.decorator is None:
                self._added.setdefault(name, loaded)
            elif name not in self._added:
                raise TypeError(
                    f"the entry point {name} = {point.value!r} (group {self.group}) names an "
                    f"object that is not decorated with @{self.decorator}({name!r}, ...)"
                )
        return self._added[name]


@functools.cache
def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """The entry points of ``group`` by name, masn's own first; a name declared by two
    packages is an error naming both."""
    try:
        metadata.distribution(OWN_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            "masn's package metadata is missing, so its networks, weights formats and datasets "
            "cannot be found: install it (pip install masn, or pip install -e . in a checkout)"
        ) from None
    points = sorted(
        metadata.entry_points(group=group),
        key=lambda point: point.dist is None or point.dist.name != OWN_DISTRIBUTION,
    )
    found: dict[str, metadata.EntryPoint] = {}
    for point in points:
        if point.name in found:
            first, second = (_owner(p) for p in (found[point.name], point))
            raise RuntimeError(
                f"{point.name!r} is declared in the entry point group {group} by both {first} "
                f"and {second}: uninstall one of them"
            )
        found[point.name] = point
    return found


def _owner(point: metadata.EntryPoint) -> str:
    return point.dist.name if point.dist is not None else point.value
