"""Trained models from elsewhere: the authors' checkpoints as masn checkpoints."""

from __future__ import annotations

from masn.pipeline.commands import Command
from masn.pipeline.training.settings import ImportOfficialModelSettings


def import_official(settings: ImportOfficialModelSettings) -> int:
    from masn.pipeline.training.official_checkpoint import import_official_checkpoint

    print(import_official_checkpoint(settings))
    return 0


ACTIONS = {"import-official": Command(ImportOfficialModelSettings, import_official)}
