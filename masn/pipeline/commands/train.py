"""`masn train`: MASN on a task, with model selection, checkpoints and exact resume."""

from __future__ import annotations

import json

from masn.pipeline.commands import Command
from masn.pipeline.training.settings import TrainSettings


def run(settings: TrainSettings) -> int:
    from masn.pipeline.training.trainer import train

    print(json.dumps(train(settings), indent=2))
    return 0


def resolve(settings: TrainSettings) -> TrainSettings:
    from masn.pipeline.training.trainer import resolved_settings

    return resolved_settings(settings)


COMMAND = Command(TrainSettings, run, resume="--resume", resolve=resolve)
