"""`masn demo`: the whole pipeline on the bundled sample."""

from __future__ import annotations

from masn.pipeline.commands import Command
from masn.pipeline.examples.settings import DemoSettings


def run(settings: DemoSettings) -> int:
    from masn.pipeline.examples.demo import outline, run_demo

    print(outline(run_demo(settings)))
    return 0


COMMAND = Command(DemoSettings, run, resolve=DemoSettings.resolved)
