"""The ``caffe2_i3d`` and ``pytorchvideo_i3d`` formats: the published Kinetics I3D ResNet-50
files, converted to our motion network's names.

Output key contracts (``masn.extract.networks.i3d.MotionFeatures`` state dicts; float32 except
the int64 scalar ``num_batches_tracked`` of every BatchNorm3d, 0 when the file has none):

* ``caffe2_i3d`` -> the "nonlocal" motion network: ``network.conv1.weight``
  (64, 3, 5, 7, 7), ``network.bn1.*``; ``network.layer{1..4}.{i}.conv{1,2,3}.weight`` with
  ``bn{1,2,3}.*`` (3 / 4 / 6 / 3 blocks; conv1 is 3x1x1 where the block is inflated) and
  ``downsample.0.weight`` / ``downsample.1.*`` in block 0. 318 tensors.
* ``pytorchvideo_i3d`` -> the "pytorchvideo" motion network: the file's own
  ``blocks.{0,1,3,4,5}.*`` names under ``network.`` (``blocks.2`` is a parameter-free pool, the
  ``blocks.6`` head is not part of our network). 318 tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from masn.weights.formats.registry import weights_format
from masn.weights.formats.resnet_layout import STEM, bottleneck_blocks
from masn.weights.formats.source_tensors import (
    Shape,
    SourceTensors,
    StateDict,
    Unused,
    entry,
    read_pickle_file,
    read_torch_file,
)

# (Caffe2 stage, our stage, pytorchvideo block) of the four stages
STAGE_NAMES = (
    ("res2", "layer1", 1),
    ("res3", "layer2", 3),
    ("res4", "layer3", 4),
    ("res5", "layer4", 5),
)
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))  # (blocks, width)
TEMPORAL = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))  # reduction kernels in time
STEM_SHAPE = (STEM, 3, 5, 7, 7)
CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}

CAFFE2_MODEL = (
    "the video-nonlocal-net I3D ResNet-50 Caffe2 pickle (i3d_baseline_32x2_IN_pretrain_400k.pkl)"
)
CAFFE2_UNUSED = (
    Unused(r".+_momentum", "SGD momentum saved with the training state"),
    Unused(r"model_iter", "training iteration counter"),
    Unused(r"lr", "learning rate at save time"),
    Unused(r"pred_[wb]", "Kinetics-400 classifier; motion features are taken before it"),
)
PYTORCHVIDEO_MODEL = "pytorchvideo's I3D ResNet-50 model-zoo checkpoint (I3D_8x8_R50.pyth)"
PYTORCHVIDEO_UNUSED = (
    Unused(r"blocks\.6\.proj\.(weight|bias)", "Kinetics-400 classifier head, not in our network"),
)


@weights_format("caffe2_i3d", role="motion", backbone="nonlocal")
def convert_caffe2_i3d(path: str | Path) -> StateDict:
    """video-nonlocal-net ``{"blobs": {name: ndarray}}`` (Python 2 pickle) -> nonlocal layout.

    Tushar-N/pytorch-resnet3d's mapping: ``conv1_w`` -> ``conv1.weight``, ``res_conv1_bn_*`` ->
    ``bn1.*``, ``res{L}_{B}_branch2{a,b,c}_w`` -> ``layer{L-1}.{B}.conv{1,2,3}.weight``,
    ``..._branch2{a,b,c}_bn_{s,b,rm,riv}`` -> ``bn{1,2,3}.{weight,bias,running_mean,
    running_var}``, ``res{L}_0_branch1_*`` -> ``downsample.{0,1}``. Drops momenta,
    ``model_iter``, ``lr`` and the ``pred_*`` classifier.
    """
    path = Path(path)
    blobs = entry(path, read_pickle_file(path), "blobs", CAFFE2_MODEL)
    source = SourceTensors(path, blobs, CAFFE2_MODEL, CAFFE2_UNUSED)
    out: StateDict = {}

    def conv_bn(conv_blob: str, bn_blob: str, conv: str, norm: str, shape: Shape) -> None:
        out[f"network.{conv}.weight"] = source.take(conv_blob, shape)
        for suffix, field in CAFFE2_BN.items():
            out[f"network.{norm}.{field}"] = source.take(f"{bn_blob}_{suffix}", shape[:1])
        out[f"network.{norm}.num_batches_tracked"] = torch.tensor(0)

    conv_bn("conv1_w", "res_conv1_bn", "conv1", "bn1", STEM_SHAPE)
    for block in bottleneck_blocks(STAGES, STEM, TEMPORAL):
        caffe2, ours, _ = STAGE_NAMES[block.stage]
        blob, name = f"{caffe2}_{block.index}", f"{ours}.{block.index}"
        if block.shortcut is not None:
            branch = f"{blob}_branch1"
            downsample = (f"{name}.downsample.0", f"{name}.downsample.1")
            conv_bn(f"{branch}_w", f"{branch}_bn", *downsample, block.shortcut)
        for letter, number, shape in zip("abc", (1, 2, 3), block.convolutions, strict=True):
            branch = f"{blob}_branch2{letter}"
            conv_bn(
                f"{branch}_w", f"{branch}_bn", f"{name}.conv{number}", f"{name}.bn{number}", shape
            )
    source.finish()
    return out


@weights_format("pytorchvideo_i3d", role="motion", backbone="pytorchvideo")
def convert_pytorchvideo_i3d(path: str | Path) -> StateDict:
    """pytorchvideo ``I3D_8x8_R50.pyth`` (``{"model_state": state dict}``) -> pytorchvideo layout.

    Names are kept, under ``network.``; a missing ``num_batches_tracked`` is filled with 0.
    Drops the ``blocks.6.proj`` classifier.
    """
    path = Path(path)
    state = entry(path, read_torch_file(path), "model_state", PYTORCHVIDEO_MODEL)
    source = SourceTensors(path, state, PYTORCHVIDEO_MODEL, PYTORCHVIDEO_UNUSED)
    out = source.conv_norm("blocks.0.conv", "blocks.0.norm", STEM_SHAPE, prefix="network.")
    for block in bottleneck_blocks(STAGES, STEM, TEMPORAL):
        name = f"blocks.{STAGE_NAMES[block.stage][2]}.res_blocks.{block.index}"
        if block.shortcut is not None:
            out |= source.conv_norm(
                f"{name}.branch1_conv", f"{name}.branch1_norm", block.shortcut, "network."
            )
        for letter, shape in zip("abc", block.convolutions, strict=True):
            conv, norm = f"{name}.branch2.conv_{letter}", f"{name}.branch2.norm_{letter}"
            out |= source.conv_norm(conv, norm, shape, "network.")
    source.finish()
    return out
