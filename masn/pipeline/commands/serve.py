"""`masn serve`: a local web app to browse a store, ask trained models and compare runs."""

from __future__ import annotations

from masn.pipeline.commands import Command
from masn.pipeline.serve.settings import ServeSettings


def run(settings: ServeSettings) -> int:
    from masn.pipeline.serve.server import serve

    return serve(settings)


COMMAND = Command(ServeSettings, run)
