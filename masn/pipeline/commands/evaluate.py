"""`masn evaluate`: a checkpoint's metrics per question type and every question's prediction."""

from __future__ import annotations

import json

from masn.pipeline.commands import Command
from masn.pipeline.training.settings import EvaluateSettings


def run(settings: EvaluateSettings) -> int:
    from masn.pipeline.training.evaluate import run_evaluate

    print(json.dumps(run_evaluate(settings), indent=2))
    return 0


def resolve(settings: EvaluateSettings) -> EvaluateSettings:
    from masn.pipeline.training.evaluate import resolved_settings

    return resolved_settings(settings)


COMMAND = Command(EvaluateSettings, run, resolve=resolve)
