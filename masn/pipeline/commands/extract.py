"""`masn extract`: raw videos -> a feature store (torchrun for several GPUs)."""

from __future__ import annotations

from masn.extract.settings import ExtractSettings
from masn.pipeline.commands import Command


def run(settings: ExtractSettings) -> int:
    from masn.extract.run.collection import run_extraction

    return run_extraction(settings)


COMMAND = Command(ExtractSettings, run)
