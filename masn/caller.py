"""Who is calling masn: the `masn` command line or Python code, and how much it wants to hear.

Library code is reached both ways, so what it tells the user must suit either: a message that
says how to change a setting names the flag on the command line (``--random-weights``) and the
keyword argument in Python (``random_weights=True``), through :func:`option`; progress bars
stay hidden when the command line was given ``-q`` (:func:`quiet`); and a banner said once per
command is not said again (:func:`first_time`). ``masn.pipeline.cli`` runs each command inside
:func:`command_line`; everything else is a Python caller.

Like ``masn.errors``, this module imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Caller:
    """command_line: a `masn` command runs (else Python code). quiet: warnings and errors
    only, no progress bars. said: what :func:`first_time` has seen."""

    command_line: bool = False
    quiet: bool = False
    said: set[str] = field(default_factory=set)


# Python callers share one record for the life of the process: a notebook sees a banner once.
_PYTHON = Caller()
_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("masn_caller", default=None)


def current() -> Caller:
    """The caller of the code running now."""
    return _CALLER.get() or _PYTHON


@contextlib.contextmanager
def command_line(quiet: bool = False) -> Iterator[Caller]:
    """Runs the body as one `masn` command: flags in advice, bars unless ``quiet``, and a fresh
    record of what was said."""
    running = Caller(command_line=True, quiet=quiet)
    token = _CALLER.set(running)
    try:
        yield running
    finally:
        _CALLER.reset(token)


def on_command_line() -> bool:
    """Whether a `masn` command is running (else Python code called us)."""
    return current().command_line


def quiet() -> bool:
    """Whether the user asked for warnings and errors only (``masn -q``): no progress bars."""
    return current().quiet


def first_time(what: str) -> bool:
    """True the first time ``what`` is asked about in this command (in Python: this process),
    so that a banner is said once."""
    said = current().said
    if what in said:
        return False
    said.add(what)
    return True


def option(name: str, value: Any = None, *, flag: str | None = None) -> str:
    """How the user sets the setting ``name`` to ``value``, in the caller's terms.

    On the command line ``--name value`` (``flag`` where the flag is spelt otherwise; True gives
    the bare flag, a list its items), in Python ``name=value``. ``value`` None names the setting
    alone (``--weights`` / ``weights``); ``...`` in a list reads as "and so on".
    """
    if on_command_line():
        spelt = flag or "--" + name.replace("_", "-")
        if value is None or value is True:
            return spelt
        items = value if isinstance(value, (list, tuple)) else [value]
        return " ".join([spelt, *(_shell(item) for item in items)])
    if value is None:
        return name
    return f"{name}={_python(value)}"


def _shell(value: Any) -> str:
    return "..." if value is Ellipsis else shlex.quote(str(value))


def _python(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_python(item) for item in value) + "]"
    return "..." if value is Ellipsis else repr(value)
