"""The one error type for user mistakes, shared by every layer of the package.

A :class:`UserError` is something the user can fix: a flag out of range, a missing or damaged
file, a setup step not done. Its message is one line that says what is wrong and what to do;
``masn`` prints it and exits with status 2. Every other exception is a bug and keeps its
traceback. The subclasses also derive from the built-in exception a caller would expect
(``ValueError`` for bad values, ``FileNotFoundError`` for absent files, ``KeyError`` for unknown
names), so library code can catch them either way.

This module imports nothing: ``masn.model`` and ``masn.weights``, which depend on nothing else
of ours, may raise these too.
"""

from __future__ import annotations

_WORKER = "Caught "  # how torch's DataLoader starts the message of an error from a worker
_WORKER_TRACEBACK = "\nOriginal Traceback"


class UserError(Exception):
    """A mistake in what the user gave or set up; the message says what to do.

    Raised in a DataLoader worker (a damaged feature file read during training), the error
    reaches the main process rebuilt by torch as ``type(text)``, where the text is the worker's
    whole traceback; the message is then the error's own last line again, and the traceback is
    kept in ``worker_traceback``.
    """

    def __init__(self, *args: object):
        self.worker_traceback = ""
        text = args[0] if len(args) == 1 else None
        if isinstance(text, str) and text.startswith(_WORKER) and _WORKER_TRACEBACK in text:
            self.worker_traceback = text
            last = text.rstrip().splitlines()[-1]  # "masn.errors.InvalidInput: the message"
            args = (last.partition(": ")[2] or last,)
        super().__init__(*args)

    def __str__(self) -> str:
        # KeyError quotes its message; a user error always reads as plain text.
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInput(UserError, ValueError):
    """A value, flag or file content that cannot be used as it is."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the command needs does not exist."""


class UnknownName(UserError, KeyError):
    """A name (video key, weights entry, task...) that is not among the known ones."""


class InUse(UserError, RuntimeError):
    """Another process holds the file or folder; wait for it or choose another."""


class DiskFull(UserError, OSError):
    """The disk (or the user's quota) is full: the message names the file and the space it
    needs (``masn.atomic.reporting_full_disk``)."""


def root_cause(error: BaseException) -> str:
    """The innermost exception behind ``error``, as "Type: first line", for one-line messages
    about a damaged file: readers such as ``torch.load`` wrap the unpickler's own one-line
    reason into a page of advice (including loading without ``weights_only``, which we never
    do)."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    line = next((text.strip() for text in str(error).splitlines() if text.strip()), "")
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
