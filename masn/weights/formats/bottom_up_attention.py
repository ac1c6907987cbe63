"""The ``detectron2_pkl``, ``hf_frcnn`` and ``milvlg_bua`` formats: the published
bottom-up-attention Faster R-CNN files, converted to our detector's names.

Output key contract (``masn.extract.networks.detector.Detector`` state dict, 533 tensors, float32):

* ``trunk.conv1.weight`` (64, 3, 7, 7), ``trunk.bn1.{weight,bias,running_mean,running_var}``;
  ``trunk.layer{1,2,3}.{i}.conv{1,2,3}.weight`` with ``bn{1,2,3}.*`` (3 / 4 / 23 blocks) and
  ``downsample.0.weight`` / ``downsample.1.*`` in block 0; every norm is a FrozenBatchNorm2d
  (four buffers, no ``num_batches_tracked``);
* ``box_head.layer4.{0,1,2}.*`` (res5, same block layout);
* ``rpn.conv.{weight,bias}`` (512, 1024, 3, 3); ``rpn.objectness.{weight,bias}`` (12, 512, 1, 1):
  one logit per anchor, object minus background; ``rpn.deltas.{weight,bias}`` (48, 512, 1, 1):
  4 per anchor; anchors in py-faster-rcnn's ratio-major order (ratio 0.5, 1, 2, each with
  sizes 64, 128, 256, 512), as ``extract.proposals.caffe_anchors`` builds them;
* ``classifier.{weight,bias}`` (1601, 2048): background FIRST;
* ``attributes.class_embedding.weight`` (1601, 256), row = class id in that background-first
  order; ``attributes.hidden.{weight,bias}`` (512, 2304) over [feature, embedding];
  ``attributes.score.{weight,bias}`` (401, 512): "no attribute" FIRST.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from masn.weights.formats.registry import weights_format
from masn.weights.formats.resnet_layout import STEM, bottleneck_blocks
from masn.weights.formats.source_tensors import (
    NORM_FIELDS,
    ConversionError,
    Shape,
    SourceTensors,
    StateDict,
    Unused,
    entry,
    read_pickle_file,
    read_torch_file,
    state_dict_in,
)

CLASSES = 1601  # 1600 Visual Genome objects + background
ATTRIBUTES = 401  # 400 attributes + "no attribute"
ANCHOR_SIZES = 4
ANCHOR_RATIOS = 3
ANCHORS = ANCHOR_SIZES * ANCHOR_RATIOS
RPN = "proposal_generator.rpn_head"
PREDICTOR = "roi_heads.box_predictor"
CELL_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"

# (detectron2 stage, our stage) of res2-res4 and the res5 box head; (blocks, width) of each
STAGE_NAMES = (
    ("backbone.res2", "trunk.layer1"),
    ("backbone.res3", "trunk.layer2"),
    ("backbone.res4", "trunk.layer3"),
    ("roi_heads.res5", "box_head.layer4"),
)
STAGES = ((3, 64), (4, 128), (23, 256), (3, 512))

# Source anchor index for each of our (ratio-major) anchors.
RATIO_MAJOR = tuple(range(ANCHORS))
SIZE_MAJOR = tuple(
    size * ANCHOR_RATIOS + ratio for ratio in range(ANCHOR_RATIOS) for size in range(ANCHOR_SIZES)
)

BOX_REGRESSION = Unused(
    rf"{PREDICTOR}\.bbox_pred\.(weight|bias)",
    "class-specific box regression: bottom-up-attention features use the proposal boxes, "
    "never the regressed ones",
)
BATCH_COUNTERS = Unused(
    r".*\.norm\.num_batches_tracked",
    "BatchNorm2d batch counters; the detector's FrozenBatchNorm2d keeps none",
)


@dataclass(frozen=True)
class Layout:
    """How one published detector file differs from the others."""

    model: str
    embedding: str  # names of the attribute head's three layers in the file
    hidden: str
    score: str
    background_last: bool  # detectron2's class order (background and "no attribute" last)
    two_way_rpn: bool  # Caffe's (background, object) softmax: 24 objectness channels
    anchor_order: tuple[int, ...]  # source anchor of each of ours, unless the file says
    unused: tuple[Unused, ...]


AIRSPLAY = Layout(
    model=(
        "the attribute Faster R-CNN of airsplay/py-bottom-up-attention "
        "(faster_rcnn_from_caffe_attr.pkl; the file without '_attr' has no attribute head)"
    ),
    embedding="cls_embedding",
    hidden="fc_attr",
    score="attr_score",
    background_last=True,
    two_way_rpn=False,
    anchor_order=SIZE_MAJOR,
    unused=(BOX_REGRESSION,),
)
HF_FRCNN = replace(  # a port of the airsplay file with BatchNorm2d counters
    AIRSPLAY,
    model="the unc-nlp/frcnn-vg-finetuned Faster R-CNN (its pytorch_model.bin)",
    unused=(BOX_REGRESSION, BATCH_COUNTERS),
)
MILVLG = Layout(
    model=(
        "the MILVLG/bottom-up-attention.pytorch Caffe-converted R101 detector "
        "(bua-caffe-frcn-r101-k10-100.pth)"
    ),
    embedding="cls_embed",
    hidden="attr_linear1",
    score="attr_linear2",
    background_last=False,
    two_way_rpn=True,
    anchor_order=RATIO_MAJOR,
    unused=(BOX_REGRESSION, BATCH_COUNTERS),
)


@weights_format("detectron2_pkl", role="detector", backbone="vg-frcnn")
def convert_detectron2_pkl(path: str | Path) -> StateDict:
    """airsplay ``faster_rcnn_from_caffe_attr*.pkl``: ``{"model": {d2 name: ndarray}, ...}``.

    Background and "no attribute" last; one sigmoid logit per anchor in detectron2's size-major
    anchor order. Transforms: the classifier rows, the class embedding rows and the attribute
    rows move their last row to the front; RPN channels are permuted to ratio-major. Drops
    ``bbox_pred``; ``cell_anchors.0``, when present, only decides the anchor permutation.
    """
    path = Path(path)
    loaded = read_pickle_file(path)
    return _convert(path, entry(path, loaded, "model", AIRSPLAY.model), AIRSPLAY)


@weights_format("hf_frcnn", role="detector", backbone="vg-frcnn")
def convert_hf_frcnn(path: str | Path) -> StateDict:
    """unc-nlp ``frcnn-vg-finetuned/pytorch_model.bin``: a flat torch state dict.

    The same names and transforms as :func:`convert_detectron2_pkl`; also drops the BatchNorm2d
    ``num_batches_tracked`` counters.
    """
    path = Path(path)
    return _convert(path, state_dict_in(path, read_torch_file(path), HF_FRCNN.model), HF_FRCNN)


@weights_format("milvlg_bua", role="detector", backbone="vg-frcnn")
def convert_milvlg_bua(path: str | Path) -> StateDict:
    """MILVLG ``bua-caffe-frcn-r101-k10-100.pth``: ``{"model": state dict}`` or a bare one.

    Caffe's class order (background and "no attribute" first, kept) and its 2-way RPN: 24
    objectness channels, 12 background then 12 object, anchors ratio-major. Transform: one logit
    per anchor ``w_object - w_background`` (and biases), exact since a softmax over two is the
    sigmoid of the difference. Drops ``bbox_pred`` (6404 rows) and any ``num_batches_tracked``.
    """
    path = Path(path)
    loaded = read_torch_file(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = entry(path, loaded, "model", MILVLG.model)
    return _convert(path, state_dict_in(path, loaded, MILVLG.model), MILVLG)


def _convert(path: Path, tensors: dict, layout: Layout) -> StateDict:
    source = SourceTensors(path, tensors, layout.model, layout.unused)
    out: StateDict = {}
    for source_key, our_key, shape in _backbone_keys():
        out[our_key] = source.take(source_key, shape)
    out.update(_rpn(source, layout))
    out.update(_predictor(source, layout))
    source.finish()
    return out


def _conv_norm(source: str, conv: str, norm: str, shape: Shape) -> Iterator[tuple[str, str, Shape]]:
    yield f"{source}.weight", f"{conv}.weight", shape
    for field in NORM_FIELDS:
        yield f"{source}.norm.{field}", f"{norm}.{field}", shape[:1]


def _backbone_keys() -> Iterator[tuple[str, str, Shape]]:
    """(detectron2 key, our key, shape) of the stem, res2-res4 and the res5 box head."""
    yield from _conv_norm("backbone.stem.conv1", "trunk.conv1", "trunk.bn1", (STEM, 3, 7, 7))
    for block in bottleneck_blocks(STAGES, STEM):
        stage, ours = STAGE_NAMES[block.stage]
        src, dst = f"{stage}.{block.index}", f"{ours}.{block.index}"
        if block.shortcut is not None:
            downsample = (f"{dst}.downsample.0", f"{dst}.downsample.1")
            yield from _conv_norm(f"{src}.shortcut", *downsample, block.shortcut)
        for number, shape in enumerate(block.convolutions, start=1):
            yield from _conv_norm(
                f"{src}.conv{number}", f"{dst}.conv{number}", f"{dst}.bn{number}", shape
            )


def _rpn(source: SourceTensors, layout: Layout) -> StateDict:
    order = list(_anchor_order(source, layout))
    channels = 2 * ANCHORS if layout.two_way_rpn else ANCHORS
    logits_w = source.take(f"{RPN}.objectness_logits.weight", (channels, 512, 1, 1))
    logits_b = source.take(f"{RPN}.objectness_logits.bias", (channels,))
    if layout.two_way_rpn:
        logits_w, logits_b = two_way_to_logit(logits_w), two_way_to_logit(logits_b)
    deltas_w = source.take(f"{RPN}.anchor_deltas.weight", (4 * ANCHORS, 512, 1, 1))
    deltas_b = source.take(f"{RPN}.anchor_deltas.bias", (4 * ANCHORS,))
    return {
        "rpn.conv.weight": source.take(f"{RPN}.conv.weight", (512, 1024, 3, 3)),
        "rpn.conv.bias": source.take(f"{RPN}.conv.bias", (512,)),
        "rpn.objectness.weight": logits_w[order],
        "rpn.objectness.bias": logits_b[order],
        "rpn.deltas.weight": reorder_deltas(deltas_w, order),
        "rpn.deltas.bias": reorder_deltas(deltas_b, order),
    }


def two_way_to_logit(two_way: Tensor) -> Tensor:
    """Caffe's (background block, object block) channels -> one logit: object - background."""
    background, foreground = two_way.chunk(2, dim=0)
    return foreground - background


def reorder_deltas(deltas: Tensor, order: list[int]) -> Tensor:
    """Permutes (4 A, ...) anchor deltas by anchor, keeping each anchor's 4 deltas together."""
    grouped = deltas.reshape(ANCHORS, 4, *deltas.shape[1:])
    return grouped[order].reshape(deltas.shape).contiguous()


def _anchor_order(source: SourceTensors, layout: Layout) -> tuple[int, ...]:
    """The file's anchor for each of ours: read from its cell anchors when it stores them."""
    if CELL_ANCHORS not in source:
        return layout.anchor_order
    try:
        return anchor_order(source.take(CELL_ANCHORS, (ANCHORS, 4)))
    except ValueError as error:
        raise ConversionError(f"{source.path} is not {source.model}: {error}") from None


def anchor_order(cell_anchors: Tensor) -> tuple[int, ...]:
    """Index of the cell anchor with each (ratio, size) of ours, from the anchors' shapes.

    Ratio = height / width in (0.5, 1, 2); size rank = log2 of the size over the smallest.
    The +1 pixel convention of Caffe anchors moves these by under 2 %, far from rounding.
    Raises ValueError when the anchors are not 4 sizes x those 3 ratios.
    """
    widths = cell_anchors[:, 2] - cell_anchors[:, 0]
    heights = cell_anchors[:, 3] - cell_anchors[:, 1]
    if not bool(torch.isfinite(cell_anchors).all() and (widths > 0).all() and (heights > 0).all()):
        raise ValueError("its cell anchors are not boxes")
    ratio = torch.log2(heights / widths).round().long() + 1
    sizes = (widths * heights).sqrt()
    size = torch.log2(sizes / sizes.min()).round().long()
    ours = (ratio * ANCHOR_SIZES + size).tolist()
    in_range = bool(((ratio >= 0) & (ratio < ANCHOR_RATIOS) & (size < ANCHOR_SIZES)).all())
    if not in_range or sorted(ours) != list(range(ANCHORS)):
        raise ValueError("its cell anchors are not 4 sizes x ratios (0.5, 1, 2)")
    order = [0] * ANCHORS
    for row, anchor in enumerate(ours):
        order[anchor] = row
    return tuple(order)


def background_first(rows: Tensor) -> Tensor:
    """Moves the last row (detectron2's background / "no attribute") to index 0."""
    return torch.roll(rows, shifts=1, dims=0)


def _predictor(source: SourceTensors, layout: Layout) -> StateDict:
    def take(layer: str, field: str, shape: Shape) -> Tensor:
        return source.take(f"{PREDICTOR}.{layer}.{field}", shape)

    out = {
        "classifier.weight": take("cls_score", "weight", (CLASSES, 2048)),
        "classifier.bias": take("cls_score", "bias", (CLASSES,)),
        "attributes.class_embedding.weight": take(layout.embedding, "weight", (CLASSES, 256)),
        "attributes.hidden.weight": take(layout.hidden, "weight", (512, 2048 + 256)),
        "attributes.hidden.bias": take(layout.hidden, "bias", (512,)),
        "attributes.score.weight": take(layout.score, "weight", (ATTRIBUTES, 512)),
        "attributes.score.bias": take(layout.score, "bias", (ATTRIBUTES,)),
    }
    if layout.background_last:
        # The embedding is indexed by the predicted class id, so its rows follow the classes.
        for key in (
            "classifier.weight",
            "classifier.bias",
            "attributes.class_embedding.weight",
            "attributes.score.weight",
            "attributes.score.bias",
        ):
            out[key] = background_first(out[key])
    return out
