"""The tensor shapes of ResNet bottleneck stages, shared by the converters of the detector
(ResNet-101 C4 trunk and res5 head), the I3D ResNet-50 (inflated to 3-D) and ResNet-152.

A bottleneck block is a 1x1 reduction to the stage's width, a 3x3 (the spatial convolution) and
a 1x1 expansion to 4 x the width; each stage's first block also has a 1x1 projection shortcut
from the channels entering the stage. In 3-D the reduction's temporal kernel is 3 in the
inflated blocks and 1 elsewhere; the 3x3 stays 1 x 3 x 3.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Shape = tuple[int, ...]
STEM = 64  # channels out of every ResNet stem, into the first stage


@dataclass(frozen=True)
class Block:
    """One bottleneck block: where it sits and the weight shapes of its convolutions."""

    stage: int  # 0 for the first stage converted
    index: int  # within the stage
    reduce: Shape
    spatial: Shape
    expand: Shape
    shortcut: Shape | None  # the projection of a stage's first block

    @property
    def convolutions(self) -> tuple[Shape, Shape, Shape]:
        """The branch's three convolutions in order: reduce, spatial, expand."""
        return self.reduce, self.spatial, self.expand


def bottleneck_blocks(
    stages: Sequence[tuple[int, int]],
    inputs: int = STEM,
    temporal: Sequence[Sequence[int]] | None = None,
) -> Iterator[Block]:
    """The blocks of ``stages`` ((blocks, width) each), in order; ``inputs``: the channels
    entering the first of them. ``temporal``: per stage, the temporal kernel of each block's
    reduction (3-D shapes); None for 2-D shapes."""
    for stage, (blocks, width) in enumerate(stages):
        outputs = 4 * width
        for index in range(blocks):
            fan_in = inputs if index == 0 else outputs
            if temporal is None:
                reduce, spatial = (width, fan_in, 1, 1), (width, width, 3, 3)
                expand, shortcut = (outputs, width, 1, 1), (outputs, fan_in, 1, 1)
            else:
                reduce, spatial = (
                    (width, fan_in, temporal[stage][index], 1, 1),
                    (width, width, 1, 3, 3),
                )
                expand, shortcut = (outputs, width, 1, 1, 1), (outputs, fan_in, 1, 1, 1)
            yield Block(stage, index, reduce, spatial, expand, shortcut if index == 0 else None)
        inputs = outputs
