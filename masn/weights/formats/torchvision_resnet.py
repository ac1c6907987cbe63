"""The ``torchvision_resnet`` format: torchvision's ImageNet ResNet-152 files, converted to our
global-appearance network's names.

Output key contract (``masn.extract.networks.resnet.GlobalAppearance`` state dict, 930 tensors): the
torchvision names under ``backbone.`` (``backbone.conv1.weight`` (64, 3, 7, 7),
``backbone.bn1.*``, ``backbone.layer{1..4}.{i}.conv{1,2,3}.weight`` with ``bn{1,2,3}.*``,
3 / 8 / 36 / 3 blocks, ``downsample.0.weight`` / ``downsample.1.*`` in block 0), float32, with
the int64 scalar ``num_batches_tracked`` of every BatchNorm2d (0 when the file has none, as the
V1 file ``resnet152-394f9c45.pth`` may not). No ``fc``: our backbone's ``fc`` is an Identity.
"""

from __future__ import annotations

from pathlib import Path

from masn.weights.formats.registry import weights_format
from masn.weights.formats.resnet_layout import STEM, bottleneck_blocks
from masn.weights.formats.source_tensors import (
    SourceTensors,
    StateDict,
    Unused,
    read_torch_file,
    state_dict_in,
)

MODEL = (
    "torchvision's ImageNet ResNet-152 state dict "
    "(resnet152-394f9c45.pth or resnet152-f82ba261.pth)"
)
UNUSED = (Unused(r"fc\.(weight|bias)", "ImageNet classifier; our backbone's fc is an Identity"),)
# (blocks, bottleneck width) of layer1..layer4
LAYERS = ((3, 64), (8, 128), (36, 256), (3, 512))


@weights_format("torchvision_resnet", role="appearance", backbone="resnet152")
def convert_torchvision_resnet(path: str | Path) -> StateDict:
    """A flat torchvision ResNet-152 state dict (V1 or V2 weights) -> ``backbone.*``.

    Names are kept under ``backbone.``; drops ``fc.*``.
    """
    path = Path(path)
    source = SourceTensors(path, state_dict_in(path, read_torch_file(path), MODEL), MODEL, UNUSED)
    out = source.conv_norm("conv1", "bn1", (64, 3, 7, 7), prefix="backbone.")
    for block in bottleneck_blocks(LAYERS, STEM):
        name = f"layer{block.stage + 1}.{block.index}"
        for number, shape in enumerate(block.convolutions, start=1):
            out |= source.conv_norm(
                f"{name}.conv{number}", f"{name}.bn{number}", shape, "backbone."
            )
        if block.shortcut is not None:
            out |= source.conv_norm(
                f"{name}.downsample.0", f"{name}.downsample.1", block.shortcut, "backbone."
            )
    source.finish()
    return out
