"""The MASN network (Seo et al., ACL 2021): modules, task heads, losses and official-weight import.

Depends on nothing else in this project (extract/, pipeline/ and weights/ build on it). The
names below are imported on first use, so that torch-free modules such as ``masn.model.config``
(read by the command line's help) do not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from masn.model.config import MASNConfig
    from masn.model.masn import MASN, MASNOutput
    from masn.model.video import VideoFeatures

_HOMES = {
    "MASN": "masn.model.masn",
    "MASNOutput": "masn.model.masn",
    "VideoFeatures": "masn.model.video",
    "MASNConfig": "masn.model.config",
}
__all__ = ["MASN", "MASNConfig", "MASNOutput", "VideoFeatures"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
