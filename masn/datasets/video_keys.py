"""Video keys: the text a dataset's questions name a video by, made from its file's name.

Keys are text that HDF5 and JSON can hold. A file name that is not valid UTF-8 gets an escaped
key (:func:`escape_name`): each byte outside valid UTF-8 becomes ``%XX`` and "%" becomes
``%25``, so ``urllib.parse.unquote_to_bytes(key)`` gives the name's bytes back; valid UTF-8
names keep their keys unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from masn.datasets.spec import Keyer
from masn.errors import InvalidInput


def escape_name(name: str) -> str:
    """A key for a file name (as ``os`` decodes it): unchanged when the name is valid UTF-8;
    otherwise each undecodable byte becomes ``%XX`` and "%" becomes ``%25``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return name
    text = os.fsencode(name).decode("utf-8", errors="surrogateescape")
    return "".join(
        f"%{ord(char) - 0xDC00:02X}" if "\udc80" <= char <= "\udcff" else char.replace("%", "%25")
        for char in text
    )


def stem(relative: str) -> str:
    """The file name of a relative path without its extension."""
    return PurePosixPath(relative).stem


def stem_matching(pattern: re.Pattern[str]) -> Keyer:
    """A keyer for files named by their key: the file name's stem where ``pattern`` matches it
    in full, else None (the file is skipped)."""

    def key(relative: str) -> str | None:
        name = stem(relative)
        return name if pattern.fullmatch(name) else None

    return key


def without_mapping(dataset: str, keyer: Keyer) -> Callable[[Path | None], Keyer]:
    """A dataset's keyer factory for datasets that take no ``--mapping``."""

    def make(mapping: Path | None) -> Keyer:
        if mapping is not None:
            raise InvalidInput(f"--mapping applies to msvd only, not to {dataset}")
        return keyer

    return make
