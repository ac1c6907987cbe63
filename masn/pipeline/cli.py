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

import importlib
import inspect
import logging
import sys
import textwrap
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from masn import __version__, settings
from masn.errors import InvalidInput, UserError
from masn.pipeline.commands import Command

log = logging.getLogger("masn")

COMMANDS = (
    "demo",
    "extract",
    "train",
    "evaluate",
    "answer",
    "show",
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


def _take_config(command: Command, args: list[str]) -> tuple[Any, bool, list[str]]:
    """Removes --config FILE and --print-config; returns the loaded settings (or None)."""
    loaded, print_config, rest = None, False, []
    items = iter(args)
    for arg in items:
        if arg == PRINT_CONFIG:
            print_config = True
        elif arg == CONFIG or arg.startswith(CONFIG + "="):
            path = arg.partition("=")[2] if "=" in arg else next(items, None)
            if not path:
                raise InvalidInput(f"{CONFIG} needs a file: {CONFIG} run.yaml")
            with settings.unchecked():
                loaded = settings.load(command.settings, path)
        else:
            rest.append(arg)
    return loaded, print_config, rest


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


def parse(argv: Sequence[str]) -> tuple[Command, Any, bool]:
    """The command named by ``argv``, its checked settings, and whether to only print them.

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
    loaded, print_config, args = _take_config(command, _renamed(command, args))
    description = f"{inspect.cleandoc(command.settings.__doc__ or '')}\n\n{_FOOTER}"
    with settings.unchecked():
        chosen = tyro.cli(
            command.settings,
            args=args,
            default=loaded,
            prog=prog,
            description=description,
            config=(tyro.conf.OmitArgPrefixes,),
        )
    settings.check_tree(chosen)
    return command, chosen, print_config


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command; returns its exit status (2: a user mistake, said in one line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    level, args = _take_flags(args)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger().setLevel(level)
    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return 0
    if args[0] == "--version":
        print(f"masn {__version__}")
        return 0
    try:
        command, chosen, print_config = parse(args)
        if print_config:
            print(settings.dump(chosen), end="")
            return 0
        return command.run(chosen)
    except UserError as error:
        # A user mistake: its message says what to do; -v shows where it came from. Any other
        # exception is a bug and keeps its traceback.
        log.error("%s", error, exc_info=level == logging.DEBUG)
        if error.worker_traceback:
            log.debug("raised in a data-loading worker: %s", error.worker_traceback)
        return 2


if __name__ == "__main__":
    sys.exit(main())
