"""Settings dataclasses: their checks, and as files (load a run description, record a run).

Every command's settings are one (possibly nested) frozen dataclass deriving from
:class:`Checked`; its command-line flags are generated from it (``masn.pipeline.cli``), and this
module writes it as YAML and reads it from YAML or JSON.
``dump`` and ``load`` are inverses: ``dump(load(dump(s)))`` is ``dump(s)``, so the output of
``--print-config`` fed back through ``--config`` prints the very same text. Run folders and
feature stores keep ``dump`` of the settings that made them.

Why dacite: it builds nested dataclasses from plain dicts with type checks (``Literal``
choices, optional fields, unknown keys refused) in one small, dependency-free library, so no
hand-written table of fields and types is needed here. YAML is read with PyYAML's safe loader
(JSON is valid YAML, so both formats load the same way).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import dacite
import yaml

from masn import atomic
from masn.errors import InvalidInput, MissingInput

S = TypeVar("S")

_DACITE = dacite.Config(strict=True, cast=[Path, tuple])


class Checked:
    """Base of the settings dataclasses: :meth:`check` runs whenever an instance is built.

    A subclass extends ``check`` (calling ``super().check()``, which refuses values outside a
    field's ``Literal`` choices) and raises :class:`~masn.errors.InvalidInput` naming the
    setting. While the command line parses (:func:`unchecked`) checks wait, and
    :func:`check_tree` then runs them once on the whole settings tree, so that a bad value is
    one line from our error handler, not a parser's error box.
    """

    def __post_init__(self) -> None:
        if not _DEFERRED.get():
            self.check()

    def check(self) -> None:
        check_choices(self)


_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("checks_deferred", default=False)


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Settings built inside skip their checks (run :func:`check_tree` on the result)."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def check_tree(settings: Any) -> None:
    """Runs the checks of ``settings`` and of every nested settings dataclass, innermost first."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_tree(value)
    if isinstance(settings, Checked):
        settings.check()


def check_choices(settings: Any) -> None:
    """Refuses a value outside its field's ``Literal`` choices (optional fields may be None).

    Flags and config files are checked by their parsers; this also catches settings built in
    Python, from the field types alone, so no list of choices is written twice.
    """
    for name, choices in _choices_of(type(settings)).items():
        value = getattr(settings, name)
        if value not in choices:
            allowed = ", ".join(repr(choice) for choice in choices if choice is not None)
            raise InvalidInput(f"{name} must be one of {allowed}; got {value!r}")


@functools.cache
def _choices_of(kind: type) -> dict[str, tuple[Any, ...]]:
    """Field name -> allowed values, for the fields of ``kind`` typed with a ``Literal``."""
    hints = typing.get_type_hints(kind)
    found = {field.name: _literal_choices(hints[field.name]) for field in dataclasses.fields(kind)}
    return {name: choices for name, choices in found.items() if choices is not None}


def _literal_choices(kind: Any) -> tuple[Any, ...] | None:
    """The values a ``Literal[...]`` or ``Literal[...] | None`` type allows (None: not one)."""
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)
    if typing.get_origin(kind) in (Union, types.UnionType):
        members = typing.get_args(kind)
        literals = [m for m in members if typing.get_origin(m) is Literal]
        if len(literals) == 1 and len(members) == 2 and type(None) in members:
            return (*typing.get_args(literals[0]), None)
    return None


def to_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data (paths as text, tuples as lists), nested like the dataclass."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"expected a settings dataclass instance, got {settings!r}")
    return _plain(dataclasses.asdict(settings))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def dump(settings: Any) -> str:
    """YAML text of the settings, fields in their declared order."""
    return yaml.safe_dump(to_dict(settings), sort_keys=False, allow_unicode=True)


def from_dict(kind: type[S], data: Any, where: str = "settings") -> S:
    """Builds ``kind`` from plain data; a wrong or unknown field is an InvalidInput naming it.

    Fields the data leaves out keep their defaults; the dataclass's own checks
    (``__post_init__``) run as for any other construction.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: expected a mapping of setting names to values, got {data!r}")
    try:
        return dacite.from_dict(kind, dict(data), config=_DACITE)
    except dacite.UnexpectedDataError as error:
        known = ", ".join(field.name for field in dataclasses.fields(kind))
        raise InvalidInput(
            f"{where}: unknown setting(s) {', '.join(sorted(error.keys))}; known: {known}"
        ) from None
    except (dacite.DaciteError, InvalidInput) as error:
        raise InvalidInput(f"{where}: {error}") from None


def load(kind: type[S], path: str | Path) -> S:
    """The settings described by a YAML or JSON file (see ``from_dict``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingInput(f"no config file at {path}") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a folder; --config takes a YAML or JSON file") from None
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{path} is not UTF-8 text; --config takes a YAML or JSON file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or "not valid YAML or JSON"
        raise InvalidInput(f"{where}: {problem}") from None
    return from_dict(kind, {} if data is None else data, str(path))


def write(settings: Any, path: str | Path) -> Path:
    """Writes ``dump(settings)`` to ``path`` (replacing it atomically); returns the path."""
    return atomic.write_text(path, dump(settings))
