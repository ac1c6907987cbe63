"""The weights cache: the folder weight files are fetched into, and its use by one process
at a time.

The folder is ``--weights`` when given, else ``$MASN_WEIGHTS_DIR``, else
``$XDG_CACHE_HOME/masn``, else ``~/.cache/masn``: a user folder, never inside the installed
package. Processes sharing it (e.g. torchrun ranks) take turns through an advisory lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from masn.caller import option
from masn.errors import InvalidInput
from masn.locking import ExclusiveLock

ENV_VAR = "MASN_WEIGHTS_DIR"


def cache_dir() -> Path:
    """The weights cache: ``$MASN_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/masn``, else
    ``~/.cache/masn``: a user folder, never inside the installed package (which a reinstall
    replaces and which may be read-only). Raises InvalidInput if that path is a file."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        folder = Path(configured).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".cache"  # XDG: absolute
        folder = base / "masn"
    return _not_a_file(folder)


def cache_folder(cache: Path | None = None, *, writable: bool = False) -> Path:
    """The cache folder to use: ``cache`` (the weights setting) or :func:`cache_dir`.

    ``writable``: created if absent and checked writable (fetch); listing leaves it as it is.
    Raises InvalidInput, one line saying what to change, when the folder cannot serve.
    """
    folder = _not_a_file(Path(cache).expanduser()) if cache is not None else cache_dir()
    if writable:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidInput(
                f"cannot create the weights cache {folder} ({error.strerror or error}): choose "
                f"another folder with {option('weights')} or {ENV_VAR}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InvalidInput(
                f"cannot write to the weights cache {folder}: fix its permissions or choose "
                f"another folder with {option('weights')} or {ENV_VAR}"
            )
    return folder


def _not_a_file(folder: Path) -> Path:
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(
            f"the weights cache {folder} is a file, not a folder: point {option('weights')} or "
            f"{ENV_VAR} at a folder (it is created if absent)"
        )
    return folder


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Exclusive use of ``folder`` across processes and threads (``masn.locking`` on ``.lock``):
    a second user waits for the first, naming it."""
    with ExclusiveLock(folder / ".lock", f"using the weights cache {folder}", "").waiting():
        yield
