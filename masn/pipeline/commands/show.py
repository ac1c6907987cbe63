"""`masn show`: a video's sampled frames with their boxes, labels and attributes."""

from __future__ import annotations

from masn.extract.settings import ShowSettings
from masn.pipeline.commands import Command


def run(settings: ShowSettings) -> int:
    from masn.extract.show import show

    show(settings.video, settings.features, settings.out, settings.decoder)
    return 0


COMMAND = Command(ShowSettings, run, renamed={"--store": "--features"})
