"""Progress bars: tqdm, hidden when the user asked for quiet output (``masn -q``).

Every long loop of the package shows its bar through :func:`bar`, so that ``-q`` silences them
all at one place (``masn.caller.quiet``).
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from masn import caller


def bar(iterable: Any = None, *, disable: bool = False, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)``, disabled under ``masn -q`` or with ``disable``."""
    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable or caller.quiet(), **options)
