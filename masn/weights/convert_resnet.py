"""Converter from torchvision's ImageNet ResNet-152 files to our global-appearance network's names.

Output key contract (``extract.resnet.GlobalAppearance`` state dict, 930 tensors): the
torchvision names under ``backbone.`` (``backbone.conv1.weight`` (64, 3, 7, 7),
``backbone.bn1.*``, ``backbone.layer{1..4}.{i}.conv{1,2,3}.weight`` with ``bn{1,2,3}.*``,
3 / 8 / 36 / 3 blocks, ``downsample.0.weight`` / ``downsample.1.*`` in block 0), float32, with
the int64 scalar ``num_batches_tracked`` of every BatchNorm2d (0 when the file has none, as the
V1 file ``resnet152-394f9c45.pth`` may not). No ``fc``: our backbone's ``fc`` is an Identity.
"""

from __future__ import annotations

from pathlib import Path

from masn.weights.source_tensors import (
    ConversionError,
    Shape,
    SourceTensors,
    StateDict,
    Unused,
    read_torch_file,
)

MODEL = (
    "torchvision's ImageNet ResNet-152 state dict "
    "(resnet152-394f9c45.pth or resnet152-f82ba261.pth)"
)
UNUSED = (Unused(r"fc\.(weight|bias)", "ImageNet classifier; our backbone's fc is an Identity"),)
# (blocks, bottleneck width) of layer1..layer4
LAYERS = ((3, 64), (8, 128), (36, 256), (3, 512))


def convert_torchvision_resnet(path: str | Path) -> StateDict:
    """A flat torchvision ResNet-152 state dict (V1 or V2 weights) -> ``backbone.*``.

    Names are kept under ``backbone.``; drops ``fc.*``.
    """
    path = Path(path)
    loaded = read_torch_file(path)
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path} is not {MODEL}: it holds no state dict")
    source = SourceTensors(path, loaded, MODEL, UNUSED)
    out: StateDict = {}

    def conv_bn(conv: str, norm: str, shape: Shape) -> None:
        out.update({f"backbone.{k}": v for k, v in source.conv_norm(conv, norm, shape).items()})

    conv_bn("conv1", "bn1", (64, 3, 7, 7))
    inputs = 64
    for layer, (blocks, width) in enumerate(LAYERS, start=1):
        outputs = 4 * width
        for i in range(blocks):
            block = f"layer{layer}.{i}"
            fan_in = inputs if i == 0 else outputs
            conv_bn(f"{block}.conv1", f"{block}.bn1", (width, fan_in, 1, 1))
            conv_bn(f"{block}.conv2", f"{block}.bn2", (width, width, 3, 3))
            conv_bn(f"{block}.conv3", f"{block}.bn3", (outputs, width, 1, 1))
            if i == 0:
                conv_bn(f"{block}.downsample.0", f"{block}.downsample.1", (outputs, inputs, 1, 1))
        inputs = outputs
    source.finish()
    return out
