"""Registries: network backbones and weights formats register themselves next to their code.

A :class:`Registry` maps names to things (a backbone's builder, a weights format's converter)
that a decorator declares in the modules of one package; no second list names them. Names are
found by reading those modules' source (:mod:`ast`), so listing them imports nothing: the
command line offers the I3D choices without loading torch. A thing itself comes from importing
its module, on its first lookup. The two registries: :data:`masn.extract.networks.backbones.
BACKBONES` and :data:`masn.weights.formats.registry.FORMATS`.

To add a backbone (another network for a role, e.g. a third I3D for the motion features):

1. ``masn/extract/networks/<module>.py`` (the role's module or a new one): a builder that takes
   no arguments and returns the network, decorated with ``@backbone("name", role="i3d")``. An
   I3D maps normalised clips (B, 3, T, H, W) to maps (B, C, T', H / 32, W / 32). The name is
   then a choice of ``ExtractionConfig.i3d`` (``--i3d``).
2. ``masn/weights/formats/<module>.py``: the converter of its published weights, a weights
   format (below) with ``layout="name"``.
3. ``masn/weights/manifest.json``: the entry of the published file.

To add a weights format (another published file layout for a role):

1. ``masn/weights/formats/<module>.py`` (the publisher's module or a new one): the converter
   ``(path) -> state dict of our module``, decorated with ``@weights_format("name", role=...)``
   (and ``layout=`` for a role with several backbones). It checks every key and shape, so it is
   also the format's validator. A format that is validated but never converted (GloVe) passes
   ``installed=False`` to a function that reads the whole file and raises ``InvalidInput``.
2. ``masn/weights/manifest.json``: an entry with ``"format": "name"``.

Plus their tests. Decorators are called by their plain name with literal values, since that is
what reading the source finds (anything else is an error naming the file and line). Tests add
toy entries with :meth:`Registry.add` (or the decorator) and take them out with
:meth:`Registry.remove`.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from masn.errors import UnknownName

T = TypeVar("T")
Option = str | bool | int | float | None


@dataclass(frozen=True)
class Declaration:
    """One use of a registry's decorator found in the source: the name, its module, the
    decorator's keyword arguments."""

    name: str
    module: str
    options: tuple[tuple[str, Option], ...]


class Registry(Generic[T]):
    """Names -> things declared with the decorator ``decorator`` in the modules of ``package``.

    ``kind`` names what is registered, for messages ("unknown backbone 'x'; known: ...").
    """

    def __init__(self, kind: str, package: str, decorator: str) -> None:
        self.kind = kind
        self.package = package
        self.decorator = decorator
        self._added: dict[str, tuple[T, dict[str, Option]]] = {}

    def add(self, name: str, item: T, **options: Option) -> None:
        """Registers ``item`` as ``name`` (the decorator calls this when its module is imported)."""
        if name in self._added:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._added[name] = (item, options)

    def remove(self, name: str) -> None:
        """Takes ``name`` out (a test's toy entry); a KeyError if it was never added."""
        del self._added[name]

    def names(self, **options: Option) -> tuple[str, ...]:
        """Every name, declared in the source or added, in declaration order; with ``options``
        only those whose decorator was given these keyword values."""
        found = {d.name: dict(d.options) for d in declarations(self.package, self.decorator)}
        for name, (_, given) in self._added.items():
            found.setdefault(name, given)
        return tuple(
            name
            for name, given in found.items()
            if all(given.get(key) == value for key, value in options.items())
        )

    def get(self, name: str) -> T:
        """The thing registered as ``name``, importing its module first when needed."""
        if name not in self._added:
            declared = {d.name: d for d in declarations(self.package, self.decorator)}
            if name in declared:
                importlib.import_module(declared[name].module)
        if name not in self._added:
            known = ", ".join(self.names()) or "none"
            raise UnknownName(f"unknown {self.kind} {name!r}; known: {known}")
        return self._added[name][0]


@functools.cache
def declarations(package: str, decorator: str) -> tuple[Declaration, ...]:
    """Each ``@decorator("name", key=value, ...)`` on a top-level function or class of the
    modules of ``package`` (not its sub-packages), read from their source without importing
    them. Raises ValueError for a name declared twice."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ValueError(f"{package} is not a package")
    found: list[Declaration] = []
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if f"@{decorator}(" not in text:
                continue
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found += _declared_in(ast.parse(text, filename=str(path)), decorator, module, path)
    names = [d.name for d in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"@{decorator} declares {', '.join(map(repr, twice))} more than once")
    return tuple(found)


def _declared_in(tree: ast.Module, decorator: str, module: str, path: Path) -> list[Declaration]:
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        for call in node.decorator_list:
            if not isinstance(call, ast.Call) or _called_name(call.func) != decorator:
                continue
            try:
                [name] = [ast.literal_eval(argument) for argument in call.args]
                options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            except ValueError:
                raise ValueError(
                    f"{path}:{call.lineno}: @{decorator} takes one name and keyword arguments, "
                    "all literal values, so that they can be read without importing the module"
                ) from None
            plain = all(isinstance(value, Option.__args__) for value in options.values())
            if not isinstance(name, str) or None in options or not plain:
                raise ValueError(
                    f"{path}:{call.lineno}: @{decorator} needs a text name and plain options"
                )
            found.append(Declaration(name, module, tuple(options.items())))
    return found


def _called_name(function: ast.expr) -> str | None:
    if isinstance(function, ast.Name):
        return function.id
    if isinstance(function, ast.Attribute):
        return function.attr
    return None
