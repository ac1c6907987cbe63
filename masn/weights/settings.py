"""The settings of `masn weights fetch` and `masn weights list`, torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from tyro.conf import Positional, arg

from masn.settings import Checked, Decided


@dataclass(frozen=True)
class FetchSettings(Checked):
    """Download (resumable), verify, validate and convert published weights.

    Without names: the paper's set (VG detector, I3D R50, ResNet-152 V1, GloVe 42B). A file
    already in the folder (downloaded earlier or placed by hand) is verified, not downloaded.
    """

    names: Positional[Annotated[tuple[str, ...], arg(metavar="NAME")]] = ()
    """Manifest names (see `masn weights list`); default: the paper's set."""
    force: bool = False
    """Download again even if the file is present."""
    weights: Decided[Path | None] = None
    """Weights folder (default: $MASN_WEIGHTS_DIR, else $XDG_CACHE_HOME/masn, else
    ~/.cache/masn)."""


@dataclass(frozen=True)
class ListSettings(Checked):
    """Every published file we know: its role, size and whether it is present and verified."""

    weights: Decided[Path | None] = None
    """Weights folder (default: $MASN_WEIGHTS_DIR, else $XDG_CACHE_HOME/masn, else
    ~/.cache/masn)."""
