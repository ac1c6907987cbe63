"""The `masn` command line: flags generated from each command's settings dataclass.

``masn [-v|-q] COMMAND [ACTION] [FLAGS] [--config FILE] [--print-config]``. The flags, their
help and defaults come from the command's settings (``masn.pipeline.commands``) through tyro,
which reads the field types and docstrings, so nothing is typed twice. ``--config`` loads a run
description (YAML or JSON, as ``--print-config`` writes it) and flags override it. Global flags
(-v/--verbose, -q/--quiet) go anywhere. Only the chosen command's settings are imported, and
they import no torch, so help is instant.

Why tyro: it builds nested, documented command lines from dataclasses (Literal choices,
optional values, tuples, positional arguments), keeps dashes in flag names and is actively
maintained; config files are handled by ``masn.settings`` (dacite + PyYAML).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import shlex
import signal
import sys
import textwrap
import typing
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Literal

from masn import __version__, caller, settings
from masn.errors import InvalidInput, UserError
from masn.pipeline.commands import Command
from masn.runtime import threads_restored

log = logging.getLogger("masn")

COMMANDS = (
    "demo",
    "extract",
    "train",
    "evaluate",
    "answer",
    "show",
    "serve",
    "features",
    "model",
    "weights",
    "bench",
    "doctor",
    "synergy",
)
VERBOSE, QUIET = ("-v", "--verbose"), ("-q", "--quiet")
CONFIG, PRINT_CONFIG = "--config", "--print-config"
_FOOTER = (
    f"Every command also takes {CONFIG} FILE (a run description in YAML or JSON, as "
    f"{PRINT_CONFIG} writes it; flags override it) and {PRINT_CONFIG} (print the effective "
    "settings and exit)."
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"masn.pipeline.commands.{name}")


def _summary(text: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split()).rstrip(".")


def _listed(name: str, summary: str, indent: int) -> list[str]:
    return textwrap.wrap(
        summary,
        width=100,
        initial_indent=" " * indent + f"{name:<{22 - indent}}",
        subsequent_indent=" " * 22,
    )


def overview() -> str:
    """`masn --help`: the commands with one line each (imports no torch)."""
    lines = [
        "usage: masn [-h] [--version] [-v | -q] COMMAND [ACTION] [FLAGS]",
        "",
        "MASN video question answering: raw videos to features, training, evaluation, answers.",
        "",
        "commands:",
    ]
    for name in COMMANDS:
        module = _module(name)
        actions = getattr(module, "ACTIONS", None)
        if actions is None:
            lines += _listed(name, _summary(module.COMMAND.settings.__doc__), 2)
        else:
            lines += _listed(name, _summary(module.__doc__), 2)
            for action, command in actions.items():
                lines += _listed(action, _summary(command.settings.__doc__), 4)
    lines += [
        "",
        "options:",
        "  -h, --help     this overview; COMMAND --help shows every flag with its default",
        "  --version      the version of masn",
        "  -v, --verbose  debug logging (anywhere on the line)",
        "  -q, --quiet    warnings and errors only (anywhere on the line)",
        "",
        textwrap.fill(_FOOTER, width=100),
    ]
    return "\n".join(lines)


def _take_flags(argv: list[str]) -> tuple[int, list[str]]:
    """Removes -v/-q from anywhere before ``--``; returns the log level and the rest."""
    level, rest = logging.INFO, []
    for index, arg in enumerate(argv):
        if arg == "--":
            rest += argv[index:]
            break
        if arg in VERBOSE:
            level = logging.DEBUG
        elif arg in QUIET:
            level = logging.WARNING
        else:
            rest.append(arg)
    return level, rest


def _take_config(
    command: Command, args: list[str]
) -> tuple[dict[str, Any] | None, bool, list[str]]:
    """Removes --config FILE and --print-config; returns the file's data (or None)."""
    data, print_config, rest = None, False, []
    items = iter(args)
    for arg in items:
        if arg == PRINT_CONFIG:
            print_config = True
        elif arg == CONFIG or arg.startswith(CONFIG + "="):
            path = arg.partition("=")[2] if "=" in arg else next(items, None)
            if not path:
                raise InvalidInput(f"{CONFIG} needs a file: {CONFIG} run.yaml")
            data = settings.read(path)
            adopted = command.adopt(data) if command.adopt is not None else None
            data = data if adopted is None else adopted
            with settings.unchecked():  # the file's own problems, before any flag's
                settings.from_dict(command.settings, _filled(command.settings, data, 0), path)
        else:
            rest.append(arg)
    return data, print_config, rest


def _filled(kind: type, data: dict[str, Any], variant: int) -> dict[str, Any]:
    """``data`` with a stand-in for each required value it lacks (null counts as lacking):
    stand-ins of ``variant`` 0 and 1 differ, so that a value no flag set shows as either."""
    hints = typing.get_type_hints(kind)
    filled = {name: value for name, value in data.items() if value is not None}
    for name in settings.required_fields(kind):
        if name not in filled:
            literal = (
                typing.get_args(hints[name]) if typing.get_origin(hints[name]) is Literal else ()
            )
            filled[name] = literal[variant % len(literal)] if literal else f"\0{variant}"
    return filled


def _required_flag(kind: type, name: str) -> str:
    """How the command line gives the required setting ``name``: its flag or its metavar."""
    hint = typing.get_type_hints(kind, include_extras=True)[name]
    metadata = typing.get_args(hint)[1:] if typing.get_origin(hint) is typing.Annotated else ()
    if tyro_positional() in metadata:
        named = [getattr(item, "metavar", None) for item in metadata]
        return next((metavar for metavar in named if metavar), name.upper())
    return "--" + name.replace("_", "-")


def tyro_positional() -> Any:
    """tyro's marker of positional arguments (imported late: tyro is slow to import)."""
    from tyro.conf import Positional

    return Positional


def _renamed(command: Command, args: list[str]) -> list[str]:
    """Today's flags for the renamed ones of earlier releases, with a warning for each."""
    if command.legacy is not None and (rewritten := command.legacy(args)) is not None:
        log.warning("this argument form is deprecated; use: %s", " ".join(rewritten))
        args = rewritten
    result = []
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in command.renamed:
            new = command.renamed[name]
            log.warning("%s is deprecated and will be removed in masn 0.2; use %s", name, new)
            arg = new + equals + value
        result.append(arg)
    return result


def parse(argv: Sequence[str]) -> tuple[Command, Any, tuple[str, ...] | None]:
    """The command named by ``argv``, its checked settings, and what to print: None to run the
    command, else the settings are only printed (``--print-config``): complete ones as the
    command resolves them (``Command.resolve``), a template with the required ones named in
    the tuple left open (null).

    ``--help`` and malformed flags end in tyro's message and ``SystemExit``; a value the
    settings refuse raises :class:`~masn.errors.UserError`.
    """
    import tyro

    args = list(argv)
    name = args.pop(0)
    if name not in COMMANDS:
        raise InvalidInput(f"unknown command {name!r}; choose one of {', '.join(COMMANDS)}")
    module, prog = _module(name), f"masn {name}"
    actions: dict[str, Command] | None = getattr(module, "ACTIONS", None)
    if actions is None:
        command = module.COMMAND
    else:
        if not args or args[0] in ("-h", "--help"):
            print(f"usage: {prog} {{{','.join(actions)}}} [FLAGS]\n")
            for action, listed in actions.items():
                print("\n".join(_listed(action, _summary(listed.settings.__doc__), 2)))
            raise SystemExit(0)
        action = args.pop(0)
        if action not in actions:
            raise InvalidInput(f"unknown action {prog} {action!r}; choose one of {list(actions)}")
        command, prog = actions[action], f"{prog} {action}"
    data, print_config, args = _take_config(command, _renamed(command, args))
    description = f"{inspect.cleandoc(command.settings.__doc__ or '')}\n\n{_FOOTER}"
    kind = command.settings
    missing = [name for name in settings.required_fields(kind) if not (data or {}).get(name)]

    def parsed(default: Any) -> Any:
        with settings.unchecked():
            return tyro.cli(
                kind,
                args=args,
                default=default,
                prog=prog,
                description=description,
                config=(tyro.conf.OmitArgPrefixes,),
            )

    if print_config and missing:
        # A template: required values that no flag sets stay open (null), and are named.
        first, second = (
            _defaults(kind, data or {}, missing, variant, required=False) for variant in (0, 1)
        )
        chosen, other = parsed(first), parsed(second)
        missing = [name for name in missing if getattr(chosen, name) != getattr(other, name)]
    else:
        chosen = parsed(None if data is None else _defaults(kind, data, missing, 0, True))
        missing = []
    if missing:
        named = ", ".join(_required_flag(kind, name) for name in missing)
        log.warning("the template leaves open what the command needs: %s", named)
        return command, chosen, tuple(missing)
    if not print_config:
        settings.check_tree(chosen)
        return command, chosen, None
    try:
        settings.check_tree(chosen)
    except InvalidInput as error:  # printed all the same: a config to complete
        log.warning("to run, the command needs more: %s", error)
        return command, chosen, ()
    return command, chosen if command.resolve is None else command.resolve(chosen), ()


def _defaults(
    kind: type, data: dict[str, Any], missing: list[str], variant: int, required: bool
) -> Any:
    """The settings of a config file as tyro's defaults: its ``missing`` required values are
    required flags (``required``) or stand-ins (``_filled``) for a template."""
    import tyro

    with settings.unchecked():
        loaded = settings.from_dict(kind, _filled(kind, data, variant))
        if required:
            loaded = dataclasses.replace(loaded, **dict.fromkeys(missing, tyro.MISSING))
    return loaded


def rerun_line(argv: Sequence[str], command: Command | None) -> str:
    """The command line that runs ``argv`` again, continuing where it stopped (the command's
    resume flag added)."""
    args = list(argv)
    if command is not None and command.resume and command.resume not in args:
        args.append(command.resume)
    return shlex.join(["masn", *args])


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command; returns its exit status (2: a user mistake, said in one line; 130:
    interrupted with Ctrl-C, said in one line with the command that continues; 141: the reader
    of the output went away, as in ``masn train --help | head``)."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # Nothing reads the output any more: say nothing, and keep Python's exit from trying to
        # flush into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


class PlainFormatter(logging.Formatter):
    """Messages as plain lines: the text alone, after "warning: " or "error: " for those (``-v``
    adds the time, level and logger instead: :data:`VERBOSE_FORMAT`)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


VERBOSE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_to_stderr(level: int) -> None:
    """Logging to stderr at ``level``: plain lines, or with timestamps under ``-v``."""
    handler = logging.StreamHandler(sys.stderr)
    verbose = level <= logging.DEBUG
    handler.setFormatter(logging.Formatter(VERBOSE_FORMAT) if verbose else PlainFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger().setLevel(level)


def _run(given: list[str]) -> int:
    level, args = _take_flags(given)
    _log_to_stderr(level)
    with caller.command_line(quiet=level > logging.INFO), threads_restored():
        return _command(given, level, args)


def _command(given: list[str], level: int, args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return 0
    if args[0] == "--version":
        print(f"masn {__version__}")
        return 0
    command = None
    try:
        command, chosen, printed = parse(args)
        if printed is None:
            return command.run(chosen)
        print(settings.dump(chosen, blank=printed), end="")
        return 0
    except UserError as error:
        # A user mistake: its message says what to do; -v shows where it came from. Any other
        # exception is a bug and keeps its traceback.
        log.error("%s", error, exc_info=level == logging.DEBUG)
        if error.worker_traceback:
            log.debug("raised in a data-loading worker: %s", error.worker_traceback)
        return 2
    except KeyboardInterrupt:
        # Every command saves its work atomically, so an interruption loses only what was in
        # flight; the rerun line continues (extraction skips stored videos, training resumes).
        log.error(
            "interrupted; the work already saved is kept: to go on, run %s",
            rerun_line(given, command),
            exc_info=level == logging.DEBUG,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
