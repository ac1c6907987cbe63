"""One module per `masn` command: its settings dataclass and the function that runs it.

A command module imports only torch-free settings at the top, so that `masn --help` and every
`masn COMMAND --help` start at once; its ``run`` imports the machinery when the command runs.
``masn.pipeline.cli`` builds the flags from the settings and dispatches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    """A command's settings dataclass and its runner (which returns the exit status).

    renamed: flags of earlier releases -> today's flag (accepted with a warning for one
    release). legacy: rewrites an older argument form (e.g. positionals that became flags)
    into today's, returning None when the arguments are not of that form. resume: the flag
    that makes a rerun continue an interrupted run (the rerun command printed after Ctrl-C
    adds it). resolve: the settings with the defaults the command decides as it runs (None
    values, paths beside other files), by the command's own code, for --print-config. adopt:
    turns the data of another command's settings file into this command's (None: not such a
    file), so that --config takes it.
    """

    settings: type
    run: Callable[[Any], int]
    renamed: Mapping[str, str] = field(default_factory=dict)
    legacy: Callable[[list[str]], list[str] | None] | None = None
    resume: str | None = None
    resolve: Callable[[Any], Any] | None = None
    adopt: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
