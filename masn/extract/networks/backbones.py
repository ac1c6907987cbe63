"""The backbones of the extraction networks by role, each registered next to its module.

A backbone is a network that fills a role of :class:`masn.extract.networks.feature_networks.
FeatureNetworks` and that a setting chooses; today the I3D role has two, the video-nonlocal-net
layout ("nonlocal") and pytorchvideo's I3D_8x8_R50 ("pytorchvideo"), chosen by
``ExtractionConfig.i3d``. Torch-free: the names are read from the source of
``masn/extract/networks/`` (:mod:`masn.registry`, which also says how to add a backbone), and a
builder's module (torch and all) is imported only when the network is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from masn.errors import UnknownName
from masn.registry import Registry

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[[], Any]  # () -> nn.Module
B = TypeVar("B", bound=Builder)

BACKBONES: Registry[Builder] = Registry("backbone", "masn.extract.networks", "backbone")


def backbone(name: str, *, role: str) -> Callable[[B], B]:
    """Registers the decorated builder (a function or class called without arguments) as the
    ``role`` network ``name``. Names are unique across roles."""

    def register(builder: B) -> B:
        BACKBONES.add(name, builder, role=role)
        return builder

    return register


def backbone_names(role: str) -> tuple[str, ...]:
    """The backbones of ``role``, in declaration order (imports none of them)."""
    return BACKBONES.names(role=role)


def build_backbone(role: str, name: str) -> nn.Module:
    """A new ``role`` network ``name`` (randomly initialised, as its builder makes it)."""
    names = backbone_names(role)
    if name not in names:
        raise UnknownName(f"unknown {role} backbone {name!r}; known: {', '.join(names)}")
    return BACKBONES.get(name)()


# The choices of ExtractionConfig.i3d (and --i3d), as a type the settings machinery reads.
MotionBackbone = Literal[backbone_names("i3d")]  # type: ignore[valid-type]
