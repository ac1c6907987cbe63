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
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import dacite
import yaml
from tyro.conf import arg

from masn import atomic
from masn.errors import InvalidInput, MissingInput

S = TypeVar("S")
T = TypeVar("T")

Decided = Annotated[T, arg(help_behavior_hint="")]
"""An optional setting whose None the command decides as it runs (``Decided[int | None]``):
its docstring states that default, so ``--help`` does not add "(default: None)" after it."""

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


def dump(settings: Any, blank: Iterable[str] = ()) -> str:
    """YAML text of the settings, fields in their declared order; the top-level fields named in
    ``blank`` are written as null (a template's required values not given yet)."""
    data = to_dict(settings)
    data.update(dict.fromkeys(blank))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def from_dict(kind: type[S], data: Any, where: str = "settings") -> S:
    """Builds ``kind`` from plain data; a wrong or unknown field is an InvalidInput naming it.

    Fields the data leaves out keep their defaults; the dataclass's own checks
    (``__post_init__``) run as for any other construction.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where}: expected a mapping of setting names to values, got {data!r}")
    problem = _cast_problem(kind, data)
    if problem:
        raise InvalidInput(f"{where}: {problem}")
    try:
        return dacite.from_dict(kind, dict(data), config=_DACITE)
    except dacite.UnexpectedDataError as error:
        known = ", ".join(field.name for field in dataclasses.fields(kind))
        raise InvalidInput(
            f"{where}: unknown setting(s) {', '.join(sorted(error.keys))}; known: {known}"
        ) from None
    except (dacite.DaciteError, InvalidInput) as error:
        raise InvalidInput(f"{where}: {error}") from None


def _cast_problem(kind: type, data: Mapping[str, Any], prefix: str = "") -> str | None:
    """What dacite's casts would get wrong, in its words: a path that is not text (``Path``
    of a list raises a TypeError naming no field), a tuple that is not a list (``tuple`` of a
    text would split it into characters)."""
    hints = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):
        if field.name not in data or data[field.name] is None:
            continue
        value, wanted = data[field.name], _optional_of(hints[field.name])
        name = prefix + field.name
        if wanted is Path and not isinstance(value, str):
            return _wrong_type(name, "a path (text)", value)
        if typing.get_origin(wanted) is tuple:
            if not isinstance(value, (list, tuple)):
                return _wrong_type(name, "a list", value)
            if Path in typing.get_args(wanted) and not all(isinstance(v, str) for v in value):
                return _wrong_type(name, "a list of paths (text)", value)
        if dataclasses.is_dataclass(wanted) and isinstance(value, Mapping):
            found = _cast_problem(wanted, value, f"{name}.")
            if found:
                return found
    return None


def _optional_of(kind: Any) -> Any:
    """``X`` of ``X | None`` (other types as they are)."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return kind


def _wrong_type(name: str, wanted: str, value: Any) -> str:
    return (
        f'wrong value type for field "{name}" - should be {wanted} instead of value {value!r} '
        f'of type "{type(value).__name__}"'
    )


def required_fields(kind: type) -> tuple[str, ...]:
    """The fields of the settings dataclass ``kind`` without a default (required flags and
    positional arguments)."""
    return tuple(
        field.name
        for field in dataclasses.fields(kind)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    )


def load(kind: type[S], path: str | Path) -> S:
    """The settings described by a YAML or JSON file (see ``from_dict``)."""
    return from_dict(kind, read(path), str(path))


def read(path: str | Path) -> dict[str, Any]:
    """The plain data of a YAML or JSON settings file (empty for an empty file)."""
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
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{path}: expected a mapping of setting names to values, got {data!r}")
    return dict(data)


def write(settings: Any, path: str | Path) -> Path:
    """Writes ``dump(settings)`` to ``path`` (replacing it atomically); returns the path."""
    return atomic.write_text(path, dump(settings))
