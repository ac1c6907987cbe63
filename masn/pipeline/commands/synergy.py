"""`masn synergy`: does each stream answer its own questions, and does alpha lean to it?"""

from __future__ import annotations

import json

from masn.pipeline.commands import Command
from masn.pipeline.examples.settings import SynergySettings


def run(settings: SynergySettings) -> int:
    from masn.pipeline.examples.synergy import format_table, run_synergy

    result = run_synergy(settings)
    print(json.dumps(result, indent=2))
    print(format_table(result))
    return 0


COMMAND = Command(SynergySettings, run)
