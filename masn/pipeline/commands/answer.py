"""`masn answer`: one video, one question -> the top answers and the attention figure."""

from __future__ import annotations

import json
import logging

from masn.pipeline.answering.settings import AnswerSettings
from masn.pipeline.commands import Command

log = logging.getLogger(__name__)


def run(settings: AnswerSettings) -> int:
    from masn.pipeline.answering.answer import answer_video

    result = answer_video(settings)
    print(json.dumps(result, indent=2))
    log.info("figure written to %s", result["figure"])
    return 0


COMMAND = Command(AnswerSettings, run)
