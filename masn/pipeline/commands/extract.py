"""`masn extract`: raw videos -> a feature store (torchrun for several GPUs)."""

from __future__ import annotations

from masn.extract.settings import ExtractSettings
from masn.pipeline.commands import Command


def run(settings: ExtractSettings) -> int:
    from masn.extract.run.collection import run_extraction

    return run_extraction(settings)


def resolve(settings: ExtractSettings) -> ExtractSettings:
    from masn.extract.run.collection import resolved_settings

    return resolved_settings(settings)


COMMAND = Command(ExtractSettings, run, renamed={"--i3d": "--motion"}, resolve=resolve)
