"""`masn answer`: one video, one question -> the top answers and the attention figure."""

from __future__ import annotations

import json
import logging

from masn.pipeline.answering.settings import AnswerSettings, from_extract_record
from masn.pipeline.commands import Command

log = logging.getLogger(__name__)


def run(settings: AnswerSettings) -> int:
    from masn.pipeline.answering.answer import answer_video

    def show(result: dict) -> None:  # the answer first: the figure comes after, and may fail
        print(json.dumps(result, indent=2), flush=True)

    result = answer_video(settings, show)
    log.info("figure written to %s", result["figure"])
    return 0


def resolve(settings: AnswerSettings) -> AnswerSettings:
    from masn.pipeline.answering.answer import resolved_settings

    return resolved_settings(settings)


COMMAND = Command(
    AnswerSettings,
    run,
    renamed={"--i3d": "--motion"},
    resolve=resolve,
    adopt=from_extract_record,
)
