"""Converters from the published Kinetics I3D ResNet-50 files to our motion network's names.

Output key contracts (``extract.i3d.MotionFeatures`` state dicts; float32 except the int64
scalar ``num_batches_tracked`` of every BatchNorm3d, 0 when the file has none):

* ``caffe2_i3d`` -> ``MotionFeatures(layout="nonlocal")``: ``network.conv1.weight``
  (64, 3, 5, 7, 7), ``network.bn1.*``; ``network.layer{1..4}.{i}.conv{1,2,3}.weight`` with
  ``bn{1,2,3}.*`` (3 / 4 / 6 / 3 blocks; conv1 is 3x1x1 where the block is inflated) and
  ``downsample.0.weight`` / ``downsample.1.*`` in block 0. 318 tensors.
* ``pytorchvideo_i3d`` -> ``MotionFeatures(layout="pytorchvideo")``: the file's own
  ``blocks.{0,1,3,4,5}.*`` names under ``network.`` (``blocks.2`` is a parameter-free pool, the
  ``blocks.6`` head is not part of our network). 318 tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from masn.weights.source_tensors import (
    Shape,
    SourceTensors,
    StateDict,
    Unused,
    entry,
    read_pickle_file,
    read_torch_file,
)

# (Caffe2 stage, our stage, pytorchvideo block, blocks, width, outputs, temporal kernels)
STAGES = (
    ("res2", "layer1", 1, 3, 64, 256, (3, 3, 3)),
    ("res3", "layer2", 3, 4, 128, 512, (3, 1, 3, 1)),
    ("res4", "layer3", 4, 6, 256, 1024, (3, 1, 3, 1, 3, 1)),
    ("res5", "layer4", 5, 3, 512, 2048, (1, 3, 1)),
)
STEM = (64, 3, 5, 7, 7)
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


def _blocks() -> Iterator[tuple[str, str, int, int, Shape, Shape, Shape, Shape]]:
    """Per residual block: Caffe2 stage, our stage, pytorchvideo block, index, and the shapes of
    its 3x1x1-or-1x1x1, 1x3x3 and 1x1x1 convolutions and of its shortcut (block 0 only)."""
    inputs = STEM[0]
    for caffe2, ours, block, blocks, width, outputs, temporal in STAGES:
        for i in range(blocks):
            fan_in = inputs if i == 0 else outputs
            yield (
                f"{caffe2}_{i}",
                f"{ours}.{i}",
                block,
                i,
                (width, fan_in, temporal[i], 1, 1),
                (width, width, 1, 3, 3),
                (outputs, width, 1, 1, 1),
                (outputs, fan_in, 1, 1, 1),
            )
        inputs = outputs


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

    conv_bn("conv1_w", "res_conv1_bn", "conv1", "bn1", STEM)
    for blob, block, _, i, conv_a, conv_b, conv_c, shortcut in _blocks():
        if i == 0:
            branch = f"{blob}_branch1"
            conv_bn(
                f"{branch}_w",
                f"{branch}_bn",
                f"{block}.downsample.0",
                f"{block}.downsample.1",
                shortcut,
            )
        for letter, index, shape in (("a", 1, conv_a), ("b", 2, conv_b), ("c", 3, conv_c)):
            branch = f"{blob}_branch2{letter}"
            conv_bn(
                f"{branch}_w", f"{branch}_bn", f"{block}.conv{index}", f"{block}.bn{index}", shape
            )
    source.finish()
    return out


def convert_pytorchvideo_i3d(path: str | Path) -> StateDict:
    """pytorchvideo ``I3D_8x8_R50.pyth`` (``{"model_state": state dict}``) -> pytorchvideo layout.

    Names are kept, under ``network.``; a missing ``num_batches_tracked`` is filled with 0.
    Drops the ``blocks.6.proj`` classifier.
    """
    path = Path(path)
    state = entry(path, read_torch_file(path), "model_state", PYTORCHVIDEO_MODEL)
    source = SourceTensors(path, state, PYTORCHVIDEO_MODEL, PYTORCHVIDEO_UNUSED)
    out: StateDict = {}

    def conv_norm(conv: str, norm: str, shape: Shape) -> None:
        out.update({f"network.{k}": v for k, v in source.conv_norm(conv, norm, shape).items()})

    conv_norm("blocks.0.conv", "blocks.0.norm", STEM)
    for _, _, stage, i, conv_a, conv_b, conv_c, shortcut in _blocks():
        block = f"blocks.{stage}.res_blocks.{i}"
        if i == 0:
            conv_norm(f"{block}.branch1_conv", f"{block}.branch1_norm", shortcut)
        for letter, shape in (("a", conv_a), ("b", conv_b), ("c", conv_c)):
            conv_norm(f"{block}.branch2.conv_{letter}", f"{block}.branch2.norm_{letter}", shape)
    source.finish()
    return out
