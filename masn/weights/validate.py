"""Whether a weights file is usable as the format its manifest entry names, before it is trusted.

Checksums tell that a file is the one published or recorded; validation tells that it holds
what we need. It runs before a file is pinned in the lock file and when `masn weights list`
meets a file the lock does not vouch for. Each format's validator is in the formats registry
(:mod:`masn.weights.formats.registry`):

* network formats: the format's converter itself, which reads the container and checks every
  key and shape; the state dict it returns is what ``masn weights fetch`` installs, so a file
  is read once;
* GloVe formats: :func:`masn.weights.glove.check_glove_file` (a readable text, or a zip holding
  exactly one .txt, with at least one vector and one dimension throughout).

Bump :data:`VALIDATION_VERSION` whenever a validator accepts less than before: lock records
carry the version they were validated with, and older ones are validated again.
"""

from __future__ import annotations

from pathlib import Path

from masn.errors import InvalidInput
from masn.weights.formats.registry import get_format
from masn.weights.manifest import WeightEntry

VALIDATION_VERSION = 1


class InvalidFormat(InvalidInput):
    """A file does not read as its manifest format; the message is the reason."""


def validate(entry: WeightEntry, path: Path) -> object:
    """What ``path`` holds, read as ``entry.format``: our state dict for a network, a
    :class:`masn.weights.glove.GloveFile` for GloVe. Writes nothing.

    Raises :class:`InvalidFormat` with the validator's reason (which names the file).
    """
    from masn.unpickle import UnsafePickleError  # here: it loads torch, listing does not

    try:
        return get_format(entry.format).validator(path)
    except (InvalidInput, UnsafePickleError) as error:
        raise InvalidFormat(str(error)) from None
