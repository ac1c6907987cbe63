"""MASN video question answering: raw videos to features, training, evaluation and answers.

The Python API, for notebooks and scripts (the command line is ``masn``)::

    import masn

    record = masn.extract_video("cat.mp4")            # installed weights (masn weights fetch)
    model = masn.load("runs/frameqa")                 # a run folder's best.pt, or a checkpoint
    result = model.answer(record, "what is the cat doing?")
    result.answer, result.top, result.alpha           # answer, (answer, score) best first, alpha
    model.figure(record, "what is the cat doing?", result)  # the Figure-3 plot

``masn.Extractor.load(...)`` keeps the networks loaded for many videos. The names load their
modules on first use, so ``import masn`` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from masn.extract.run.one_video import Extractor, extract_video
    from masn.extract.store.schema import VideoRecord
    from masn.pipeline.answering.answer import ModelAnswer
    from masn.pipeline.answering.trained_model import TrainedModel, load

_HOMES = {
    "Extractor": "masn.extract.run.one_video",
    "extract_video": "masn.extract.run.one_video",
    "VideoRecord": "masn.extract.store.schema",
    "ModelAnswer": "masn.pipeline.answering.answer",
    "TrainedModel": "masn.pipeline.answering.trained_model",
    "load": "masn.pipeline.answering.trained_model",
}
__all__ = [
    "Extractor",
    "ModelAnswer",
    "TrainedModel",
    "VideoRecord",
    "__version__",
    "extract_video",
    "load",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'masn' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
