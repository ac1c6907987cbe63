"""`masn doctor`: does this install work on this device, and how fast is it (one JSON)."""

from __future__ import annotations

import json

from masn.pipeline.benchmarks.settings import DoctorSettings
from masn.pipeline.commands import Command


def run(settings: DoctorSettings) -> int:
    from masn.pipeline.benchmarks.doctor import run_doctor

    report = run_doctor(settings)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


COMMAND = Command(DoctorSettings, run)
