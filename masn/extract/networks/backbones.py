"""The networks that fill each extraction role, registered where they are defined.

A backbone is a builder ``(ExtractionConfig) -> nn.Module`` decorated with
``@backbone(name, role=...)`` and declared as an entry point of ``masn.backbones.<role>``; the
settings offer its name as a choice of ``--detector``, ``--appearance`` or ``--motion``. What
the module computes, per role (B sampled frames, N boxes):

* detector: ``(images, scales) -> Detections`` (boxes, labels, scores, region features);
* appearance: ``(frames (B, S, S, 3) uint8, boxes, frame_sizes) -> (global (B, A), objects
  (B, N, A') or None)``; None: the detector's region features are the appearance objects;
* motion: ``(clips (B, L, S, S, 3) uint8, boxes, frame_sizes) -> (global (B, M), objects
  (B, N, M'))``.

Torch-free: names list from package metadata; a builder's module (torch and all) is imported
only when the network is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from masn.errors import UnknownName
from masn.registry import Registry
from masn.roles import ROLES, Role

if TYPE_CHECKING:
    from torch import nn

    from masn.extract.settings import ExtractionConfig

Builder = Callable[["ExtractionConfig"], Any]  # (config) -> nn.Module
B = TypeVar("B", bound=Builder)

BACKBONES: dict[Role, Registry[Builder]] = {
    role: Registry(f"{role} network", f"masn.backbones.{role}", "backbone") for role in ROLES
}


def backbone(name: str, *, role: Role) -> Callable[[B], B]:
    """Registers the decorated builder as the ``role`` network ``name``."""
    if role not in BACKBONES:
        raise ValueError(f"backbone {name!r}: role {role!r} is not one of {', '.join(ROLES)}")

    def register(builder: B) -> B:
        BACKBONES[role].add(name, builder)
        return builder

    return register


def backbone_names(role: Role) -> tuple[str, ...]:
    """The networks of ``role``, masn's own first (imports none of them)."""
    return BACKBONES[role].names()


def build_backbone(role: Role, name: str, config: ExtractionConfig) -> nn.Module:
    """A new, randomly initialised ``role`` network ``name`` for the extraction ``config``."""
    names = backbone_names(role)
    if name not in names:
        raise UnknownName(f"unknown {role} network {name!r}; known: {', '.join(names)}")
    return BACKBONES[role].get(name)(config)


# The choices of the settings (--detector, --appearance, --motion), as types they read.
DetectorBackbone = Literal[backbone_names("detector")]  # type: ignore[valid-type]
AppearanceBackbone = Literal[backbone_names("appearance")]  # type: ignore[valid-type]
MotionBackbone = Literal[backbone_names("motion")]  # type: ignore[valid-type]
