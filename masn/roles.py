"""The three network roles of extraction, spelled one way everywhere: settings and flags
(``--detector``, ``--appearance``, ``--motion``), installed weights, store provenance.

The detector finds the boxes every role's object features share (and gives region features);
the appearance network sees single frames, the motion network clips around them.
"""

from __future__ import annotations

import typing
from typing import Literal

Role = Literal["detector", "appearance", "motion"]
ROLES: tuple[Role, ...] = typing.get_args(Role)
FEATURES = ("appearance", "appearance_objects", "motion", "motion_objects")
"""The features the appearance and motion networks give per sampled frame: a global one and one
per object each (the names of a store's fields and of the model's inputs)."""
