"""Every published weights format, as a synthetic file of its exact published structure, is
converted and strictly loaded into our real modules; transforms are checked against the sources.

The layouts below restate the public module code the weights came from (the same rules as the
project's research key lists ``keys_*.txt`` from weights_formats.md):

* detectron2 R101-C4 names: ``facebookresearch/detectron2`` ``modeling/backbone/resnet.py`` as
  forked by airsplay/py-bottom-up-attention (FrozenBN, 4 buffers) and ported by HF
  ``examples/research_projects/lxmert/modeling_frcnn.py`` (BatchNorm2d, + num_batches_tracked,
  + ``cell_anchors.0``); attribute head ``cls_embedding`` / ``fc_attr`` / ``attr_score``, 1601
  classes with background last, ``bbox_pred`` 6400 rows;
* MILVLG/bottom-up-attention.pytorch ``bua/caffe/modeling/{rpn,fast_rcnn}.py``: 24-channel RPN
  (12 background then 12 object), ``cls_embed`` / ``attr_linear1`` / ``attr_linear2``,
  background first, ``bbox_pred`` 6404 rows, no num_batches_tracked;
* video-nonlocal-net ``lib/models/resnet_video_org.py`` + ``lib/utils/checkpoints.py``
  (``{"blobs": ...}`` with ``*_momentum``, ``model_iter``, ``lr``, ``pred_*``, Python 2 pickle);
* pytorchvideo 0.1.5 ``models/hub/resnet.py`` ``i3d_r50`` (``{"model_state": ...}``);
* torchvision ``models/resnet.py`` ``resnet152``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from masn.extract.networks.detector import AttributeHead, Detector, RPNHead
from masn.extract.networks.i3d import MotionFeatures
from masn.extract.networks.proposals import caffe_anchors
from masn.extract.networks.resnet import GlobalAppearance
from masn.weights import commands, download
from masn.weights.convert import CONVERTERS, convert
from masn.weights.convert_detector import anchor_order
from masn.weights.download import LOCK_NAME, file_sha256, read_lock
from masn.weights.installed import read_installed
from masn.weights.manifest import get
from masn.weights.safe_pickle import UnsafePickleError, load_pickle
from masn.weights.source_tensors import ConversionError
from masn.weights.status import CORRUPT, VERIFIED, list_weights
from masn.weights.validate import VALIDATORS

NORM = ("weight", "bias", "running_mean", "running_var")
Shape = tuple[int, ...]


# ---------------------------------------------------------------- published layouts


def _bn(prefix: str, channels: int, counter: bool) -> dict[str, Shape]:
    keys = {f"{prefix}.{field}": (channels,) for field in NORM}
    if counter:
        keys[f"{prefix}.num_batches_tracked"] = ()
    return keys


def d2_r101_c4(counters: bool) -> dict[str, Shape]:
    """Stem, res2-res4 and the res5 box head, detectron2 names (keys_*_frcnn*.txt, backbone)."""
    keys = {"backbone.stem.conv1.weight": (64, 3, 7, 7)}
    keys |= _bn("backbone.stem.conv1.norm", 64, counters)
    stages = (("backbone.res2", 3, 64, 64), ("backbone.res3", 4, 256, 128))
    stages += (("backbone.res4", 23, 512, 256), ("roi_heads.res5", 3, 1024, 512))
    for stage, blocks, inputs, width in stages:
        for i in range(blocks):
            block, fan_in = f"{stage}.{i}", inputs if i == 0 else 4 * width
            convs = {"conv1": (width, fan_in, 1, 1), "conv2": (width, width, 3, 3)}
            convs["conv3"] = (4 * width, width, 1, 1)
            if i == 0:
                convs["shortcut"] = (4 * width, inputs, 1, 1)
            for conv, shape in convs.items():
                keys[f"{block}.{conv}.weight"] = shape
                keys |= _bn(f"{block}.{conv}.norm", shape[0], counters)
    return keys


def detector_layout(fmt: str) -> dict[str, Shape]:
    """keys_airsplay_faster_rcnn_from_caffe_attr.txt / keys_hf_frcnn_vg_finetuned.txt /
    keys_milvlg_bua_caffe_frcn_r101.txt (cell anchors added separately)."""
    keys = d2_r101_c4(counters=fmt == "hf_frcnn")
    rpn, box = "proposal_generator.rpn_head", "roi_heads.box_predictor"
    objectness = 24 if fmt == "milvlg_bua" else 12
    keys |= {f"{rpn}.conv.weight": (512, 1024, 3, 3), f"{rpn}.conv.bias": (512,)}
    keys |= {f"{rpn}.objectness_logits.weight": (objectness, 512, 1, 1)}
    keys |= {f"{rpn}.objectness_logits.bias": (objectness,)}
    keys |= {f"{rpn}.anchor_deltas.weight": (48, 512, 1, 1), f"{rpn}.anchor_deltas.bias": (48,)}
    keys |= {f"{box}.cls_score.weight": (1601, 2048), f"{box}.cls_score.bias": (1601,)}
    regression = 6404 if fmt == "milvlg_bua" else 6400
    keys |= {f"{box}.bbox_pred.weight": (regression, 2048), f"{box}.bbox_pred.bias": (regression,)}
    names = ("cls_embed", "attr_linear1", "attr_linear2") if fmt == "milvlg_bua" else None
    embedding, hidden, score = names or ("cls_embedding", "fc_attr", "attr_score")
    keys |= {f"{box}.{embedding}.weight": (1601, 256)}
    keys |= {f"{box}.{hidden}.weight": (512, 2304), f"{box}.{hidden}.bias": (512,)}
    keys |= {f"{box}.{score}.weight": (401, 512), f"{box}.{score}.bias": (401,)}
    return keys


I3D_STAGES = ((3, 64, (3, 3, 3)), (4, 128, (3, 1, 3, 1)), (6, 256, (3, 1, 3, 1, 3, 1)))
I3D_STAGES += ((3, 512, (1, 3, 1)),)


def caffe2_i3d_layout() -> dict[str, Shape]:
    """keys_caffe2_i3d_baseline_32x2_IN_pretrain_400k.txt, less momentum / model_iter / lr."""
    keys: dict[str, Shape] = {"conv1_w": (64, 3, 5, 7, 7)}
    keys |= {f"res_conv1_bn_{s}": (64,) for s in ("s", "b", "rm", "riv")}
    inputs = 64
    for stage, (blocks, width, temporal) in enumerate(I3D_STAGES, start=2):
        for i in range(blocks):
            fan_in = inputs if i == 0 else 4 * width
            convs = {"branch2a": (width, fan_in, temporal[i], 1, 1)}
            convs |= {"branch2b": (width, width, 1, 3, 3), "branch2c": (4 * width, width, 1, 1, 1)}
            if i == 0:
                convs["branch1"] = (4 * width, fan_in, 1, 1, 1)
            for conv, shape in convs.items():
                keys[f"res{stage}_{i}_{conv}_w"] = shape
                keys |= {
                    f"res{stage}_{i}_{conv}_bn_{s}": shape[:1] for s in ("s", "b", "rm", "riv")
                }
        inputs = 4 * width
    return keys | {"pred_w": (400, 2048), "pred_b": (400,)}


def pytorchvideo_layout() -> dict[str, Shape]:
    """keys_pytorchvideo_i3d_r50_I3D_8x8_R50.txt (``model_state``)."""
    keys = {"blocks.0.conv.weight": (64, 3, 5, 7, 7)} | _bn("blocks.0.norm", 64, True)
    inputs = 64
    for stage, (blocks, width, temporal) in zip((1, 3, 4, 5), I3D_STAGES, strict=True):
        for i in range(blocks):
            block, fan_in = f"blocks.{stage}.res_blocks.{i}", inputs if i == 0 else 4 * width
            convs = {"branch2.conv_a": (width, fan_in, temporal[i], 1, 1)}
            convs["branch2.conv_b"] = (width, width, 1, 3, 3)
            convs["branch2.conv_c"] = (4 * width, width, 1, 1, 1)
            if i == 0:
                convs["branch1_conv"] = (4 * width, fan_in, 1, 1, 1)
            for conv, shape in convs.items():
                keys[f"{block}.{conv}.weight"] = shape
                norm = conv.replace("conv", "norm")
                keys |= _bn(f"{block}.{norm}", shape[0], True)
        inputs = 4 * width
    return keys | {"blocks.6.proj.weight": (400, 2048), "blocks.6.proj.bias": (400,)}


def torchvision_resnet_layout(blocks: tuple[int, ...] = (3, 8, 36, 3)) -> dict[str, Shape]:
    """keys_torchvision_resnet152.txt."""
    keys = {"conv1.weight": (64, 3, 7, 7)} | _bn("bn1", 64, True)
    inputs = 64
    for layer, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            block, fan_in = f"layer{layer}.{i}", inputs if i == 0 else 4 * width
            convs = {"conv1": (width, fan_in, 1, 1), "conv2": (width, width, 3, 3)}
            convs["conv3"] = (4 * width, width, 1, 1)
            for index, (conv, shape) in enumerate(convs.items(), start=1):
                keys[f"{block}.{conv}.weight"] = shape
                keys |= _bn(f"{block}.bn{index}", shape[0], True)
            if i == 0:
                keys[f"{block}.downsample.0.weight"] = (4 * width, inputs, 1, 1)
                keys |= _bn(f"{block}.downsample.1", 4 * width, True)
        inputs = 4 * width
    return keys | {"fc.weight": (1000, 2048), "fc.bias": (1000,)}


def d2_cell_anchors() -> np.ndarray:
    """detectron2's ``generate_cell_anchors``: size-major, centred at 0 (cell_anchors_vg_d2)."""
    anchors = []
    for size in (64, 128, 256, 512):
        for ratio in (0.5, 1.0, 2.0):
            width = math.sqrt(size * size / ratio)
            height = ratio * width
            anchors.append([-width / 2, -height / 2, width / 2, height / 2])
    return np.array(anchors, dtype=np.float32)


# ---------------------------------------------------------------- synthetic files


def synthesize(layout: dict[str, Shape], seed: int) -> dict[str, np.ndarray]:
    """Distinct small random values per tensor (so a swapped mapping shows), int64 counters."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            arrays[key] = np.array(rng.integers(1, 1000), dtype=np.int64)
        else:
            arrays[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return arrays


def as_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def write_py2_pickle(path: Path, obj: object) -> None:
    """What Python 2's ``cPickle.dump(obj, file, 2)`` writes for nested dicts of str keys, ints
    and float32 numpy (1.x) arrays: byte strings as BINSTRING, arrays via
    ``numpy.core.multiarray._reconstruct`` and a BUILD with the raw data."""
    with path.open("wb") as file:
        out = file.write

        def string(data: bytes) -> None:
            if len(data) < 256:
                out(b"U" + bytes([len(data)]))
            else:
                out(b"T" + struct.pack("<I", len(data)))
            out(data)

        def integer(value: int) -> None:
            out(b"J" + struct.pack("<i", value))

        def write(value: object) -> None:
            if isinstance(value, dict):
                out(b"}")
                for key, item in value.items():
                    string(key.encode())
                    write(item)
                    out(b"s")
            elif isinstance(value, int):
                integer(value)
            else:
                assert isinstance(value, np.ndarray) and value.dtype == np.float32
                out(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
                integer(0)
                out(b"\x85")
                string(b"b")
                out(b"\x87R(")  # ndarray made; its state tuple follows
                integer(1)
                out(b"(")
                for dim in value.shape:
                    integer(dim)
                out(b"tcnumpy\ndtype\n")
                string(b"f4")
                integer(0)
                integer(1)
                out(b"\x87R(")  # dtype made; its state tuple follows
                integer(3)
                string(b"<")
                out(b"NNN")
                integer(-1)
                integer(-1)
                integer(0)
                out(b"tb\x89")  # dtype built; is_fortran = False
                string(memoryview(np.ascontiguousarray(value)).cast("B"))
                out(b"tb")

        out(b"\x80\x02")
        write(obj)
        out(b".")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """One synthetic file per format: (path, the source tensors as written)."""
    folder = tmp_path_factory.mktemp("published")
    made: dict[str, tuple[Path, dict]] = {}

    airsplay = synthesize(detector_layout("detectron2_pkl"), seed=1)
    path = folder / "faster_rcnn_from_caffe_attr.pkl"
    with path.open("wb") as file:  # a Python 3 detectron2 dump: protocol 4, numpy values
        pickle.dump({"model": airsplay, "__author__": "airsplay"}, file, protocol=4)
    made["detectron2_pkl"] = (path, airsplay)

    hf = synthesize(detector_layout("hf_frcnn"), seed=2)
    hf["proposal_generator.anchor_generator.cell_anchors.0"] = d2_cell_anchors()
    path = folder / "pytorch_model.bin"
    torch.save(as_torch(hf), path)
    made["hf_frcnn"] = (path, hf)

    milvlg = synthesize(detector_layout("milvlg_bua"), seed=3)
    path = folder / "bua-caffe-frcn-r101-k10-100.pth"
    torch.save({"model": as_torch(milvlg)}, path)
    made["milvlg_bua"] = (path, milvlg)

    blobs: dict = synthesize(caffe2_i3d_layout(), seed=4)
    momenta = {f"{k}_momentum": v for k, v in blobs.items() if not k.endswith(("_rm", "_riv"))}
    blobs |= momenta | {"model_iter": 400000, "lr": np.array([0.0001], dtype=np.float32)}
    path = folder / "i3d_baseline_32x2_IN_pretrain_400k.pkl"
    write_py2_pickle(path, {"blobs": blobs})
    made["caffe2_i3d"] = (path, blobs)

    pyvideo = synthesize(pytorchvideo_layout(), seed=5)
    path = folder / "I3D_8x8_R50.pyth"
    torch.save({"model_state": as_torch(pyvideo), "epoch": 196}, path)
    made["pytorchvideo_i3d"] = (path, pyvideo)

    resnet = synthesize(torchvision_resnet_layout(), seed=6)
    path = folder / "resnet152-f82ba261.pth"
    torch.save(as_torch(resnet), path)
    made["torchvision_resnet"] = (path, resnet)
    return made


@pytest.fixture(scope="module")
def converted(files: dict[str, tuple[Path, dict]]) -> dict[str, dict[str, torch.Tensor]]:
    return {fmt: convert(fmt, path) for fmt, (path, _) in files.items()}


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


# ---------------------------------------------------------------- strict loads, renames


def test_registry_covers_every_format() -> None:
    expected = {"detectron2_pkl", "hf_frcnn", "milvlg_bua", "caffe2_i3d"}
    assert set(CONVERTERS) == expected | {"pytorchvideo_i3d", "torchvision_resnet"}
    with pytest.raises(ValueError, match="no converter for weights format 'glove_zip'"):
        convert("glove_zip", "x")


@pytest.mark.parametrize("fmt", ["detectron2_pkl", "hf_frcnn", "milvlg_bua"])
def test_detector_formats_load_strictly(fmt, files, converted, detector) -> None:
    state = converted[fmt]
    detector.load_state_dict(state, strict=True)
    assert all(t.dtype == torch.float32 for t in state.values())
    _, source = files[fmt]
    renames = [
        (r"^backbone\.stem\.conv1\.norm\.", "trunk.bn1."),
        (r"^backbone\.stem\.conv1\.", "trunk.conv1."),
        (r"^backbone\.res(\d)\.", lambda m: f"trunk.layer{int(m.group(1)) - 1}."),
        (r"^roi_heads\.res5\.", "box_head.layer4."),
        (r"\.shortcut\.norm\.", ".downsample.1."),
        (r"\.shortcut\.", ".downsample.0."),
        (r"\.conv(\d)\.norm\.", r".bn\1."),
        (r"^proposal_generator\.rpn_head\.conv\.", "rpn.conv."),
    ]
    checked = 0
    for key, value in source.items():
        if not key.startswith(("backbone.", "roi_heads.res5.", "proposal_generator.rpn_head.conv")):
            continue
        if key.endswith("num_batches_tracked"):
            continue
        ours = key
        for pattern, replacement in renames:
            ours = re.sub(pattern, replacement, ours)
        assert torch.equal(state[ours], torch.from_numpy(value)), (key, ours)
        checked += 1
    assert checked == 520 + 2  # every backbone and res5 tensor, and the RPN conv
    assert not any("num_batches_tracked" in k for k in state)


def test_background_moves_first_in_detectron2_layouts(files, converted) -> None:
    for fmt in ("detectron2_pkl", "hf_frcnn"):
        state, source = converted[fmt], files[fmt][1]
        box = "roi_heads.box_predictor"
        for ours, theirs in (
            ("classifier.weight", "cls_score.weight"),
            ("classifier.bias", "cls_score.bias"),
            ("attributes.class_embedding.weight", "cls_embedding.weight"),
            ("attributes.score.weight", "attr_score.weight"),
            ("attributes.score.bias", "attr_score.bias"),
        ):
            src = torch.from_numpy(source[f"{box}.{theirs}"])
            assert torch.equal(state[ours][0], src[-1]), ours  # background / no attribute
            assert torch.equal(state[ours][1:], src[:-1]), ours
        hidden = torch.from_numpy(source[f"{box}.fc_attr.weight"])
        assert torch.equal(state["attributes.hidden.weight"], hidden)


def test_milvlg_keeps_caffe_class_order(files, converted) -> None:
    state, source = converted["milvlg_bua"], files["milvlg_bua"][1]
    box = "roi_heads.box_predictor"
    pairs = {"classifier.weight": "cls_score.weight", "attributes.score.bias": "attr_linear2.bias"}
    pairs |= {"attributes.class_embedding.weight": "cls_embed.weight"}
    pairs |= {"attributes.hidden.weight": "attr_linear1.weight"}
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], torch.from_numpy(source[f"{box}.{theirs}"])), ours


@torch.no_grad()
def test_heads_predict_what_detectron2_predicts(files, converted) -> None:
    """Same region features: our class / attribute probabilities equal detectron2's with the
    background (no-attribute) column moved first, through the embedding of the argmax class."""
    state, source = converted["detectron2_pkl"], files["detectron2_pkl"][1]
    box = "roi_heads.box_predictor."
    d2 = {k[len(box) :]: torch.from_numpy(v) for k, v in source.items() if k.startswith(box)}
    features = torch.randn(64, 2048, generator=torch.Generator().manual_seed(0)) * 3
    d2_scores = F.linear(features, d2["cls_score.weight"], d2["cls_score.bias"])
    d2_classes = d2_scores.argmax(dim=1)
    joint = torch.cat([features, d2["cls_embedding.weight"][d2_classes]], dim=1)
    hidden = F.relu(F.linear(joint, d2["fc_attr.weight"], d2["fc_attr.bias"]))
    d2_attributes = F.linear(hidden, d2["attr_score.weight"], d2["attr_score.bias"]).softmax(1)

    classes = F.linear(features, state["classifier.weight"], state["classifier.bias"])
    torch.testing.assert_close(classes.softmax(1)[:, 0], d2_scores.softmax(1)[:, -1])
    torch.testing.assert_close(classes.softmax(1)[:, 1:], d2_scores.softmax(1)[:, :-1])
    assert torch.equal(classes.argmax(1), (d2_classes + 1) % 1601)
    head = AttributeHead()
    head.load_state_dict(
        {k[len("attributes.") :]: v for k, v in state.items() if "attributes" in k}
    )
    attributes = head(features, classes.argmax(1)).softmax(1)
    torch.testing.assert_close(attributes[:, 0], d2_attributes[:, -1])
    torch.testing.assert_close(attributes[:, 1:], d2_attributes[:, :-1])


# ---------------------------------------------------------------- the RPN


def _rpn_head(state: dict[str, torch.Tensor]) -> RPNHead:
    head = RPNHead(12)
    head.load_state_dict({k[len("rpn.") :]: v for k, v in state.items() if k.startswith("rpn.")})
    return head


def _reference_hidden(source: dict[str, np.ndarray], features: torch.Tensor) -> torch.Tensor:
    rpn = "proposal_generator.rpn_head"
    weight, bias = (torch.from_numpy(source[f"{rpn}.conv.{f}"]) for f in ("weight", "bias"))
    return F.relu(F.conv2d(features, weight, bias, padding=1))


def _reference(source: dict[str, np.ndarray], layer: str, hidden: torch.Tensor) -> torch.Tensor:
    rpn = "proposal_generator.rpn_head"
    weight, bias = (torch.from_numpy(source[f"{rpn}.{layer}.{f}"]) for f in ("weight", "bias"))
    return F.conv2d(hidden, weight, bias)


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["detectron2_pkl", "hf_frcnn"])
def test_rpn_size_major_anchors_become_ratio_major(fmt, files, converted) -> None:
    source = files[fmt][1]
    features = torch.randn(2, 1024, 5, 7, generator=torch.Generator().manual_seed(0))
    hidden = _reference_hidden(source, features)
    d2_probs = _reference(source, "objectness_logits", hidden).sigmoid()
    d2_deltas = _reference(source, "anchor_deltas", hidden).view(2, 12, 4, 5, 7)
    logits, deltas = _rpn_head(converted[fmt])(features)
    deltas = deltas.view(2, 12, 4, 5, 7)

    ours, theirs = caffe_anchors(), torch.from_numpy(d2_cell_anchors())
    for ratio in range(3):
        for size in range(4):
            a, d = ratio * 4 + size, size * 3 + ratio  # ratio-major vs detectron2's size-major
            # the same anchor shape: aspect ratio and size, up to Caffe's integer rounding
            # (23 x 12 for ratio 0.5 at scale 1: 8 % more area than 16 x 16)
            w, h = ours[a, 2:] - ours[a, :2] + 1
            dw, dh = theirs[d, 2:] - theirs[d, :2]
            assert abs(math.log2(float(h / w)) - math.log2(float(dh / dw))) < 0.1
            assert abs(math.log2(float(w * h)) - math.log2(float(dw * dh))) < 0.15
            torch.testing.assert_close(logits[:, a].sigmoid(), d2_probs[:, d])
            torch.testing.assert_close(deltas[:, a], d2_deltas[:, d])


@torch.no_grad()
def test_rpn_two_way_softmax_becomes_one_logit(files, converted) -> None:
    """MILVLG's Caffe RPN: softmax over (background, object) = sigmoid of our single logit."""
    source = files["milvlg_bua"][1]
    features = torch.randn(2, 1024, 5, 7, generator=torch.Generator().manual_seed(0))
    hidden = _reference_hidden(source, features)
    scores = _reference(source, "objectness_logits", hidden)
    caffe_object = F.softmax(scores.view(2, 2, 12, 5, 7), dim=1)[:, 1]
    caffe_deltas = _reference(source, "anchor_deltas", hidden)
    logits, deltas = _rpn_head(converted["milvlg_bua"])(features)
    torch.testing.assert_close(logits.sigmoid(), caffe_object)
    torch.testing.assert_close(deltas, caffe_deltas)
    assert float((caffe_object - 0.5).abs().max()) > 0.05  # a real test, not all one half


def test_anchor_order_follows_the_files_cell_anchors() -> None:
    d2 = torch.from_numpy(d2_cell_anchors())
    size_major = tuple(size * 3 + ratio for ratio in range(3) for size in range(4))
    assert anchor_order(d2) == size_major
    assert anchor_order(caffe_anchors()) == tuple(range(12))
    shuffled = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        caffe_anchors()[shuffled][list(anchor_order(caffe_anchors()[shuffled]))], caffe_anchors()
    )
    with pytest.raises(ValueError, match="not 4 sizes"):
        anchor_order(torch.cat([d2[:6], d2[:6]]))


# ---------------------------------------------------------------- I3D and ResNet-152


def test_caffe2_i3d_loads_strictly_with_tushar_names(files, converted) -> None:
    state, (_, blobs) = converted["caffe2_i3d"], files["caffe2_i3d"]
    MotionFeatures("nonlocal").load_state_dict(state, strict=True)
    renames = [
        (r"^conv1_w$", "conv1.weight"),
        (r"^res_conv1_bn_", "bn1."),
        (r"^res(\d)_(\d)_", lambda m: f"layer{int(m.group(1)) - 1}.{m.group(2)}."),
        (r"branch2([abc])_w$", lambda m: f"conv{' abc'.index(m.group(1))}.weight"),
        (r"branch2([abc])_bn_", lambda m: f"bn{' abc'.index(m.group(1))}."),
        (r"branch1_w$", "downsample.0.weight"),
        (r"branch1_bn_", "downsample.1."),
        (r"\.s$", ".weight"),
        (r"\.b$", ".bias"),
        (r"\.rm$", ".running_mean"),
        (r"\.riv$", ".running_var"),
    ]
    params = [k for k in caffe2_i3d_layout() if not k.startswith("pred_")]
    for key in params:
        ours = key
        for pattern, replacement in renames:
            ours = re.sub(pattern, replacement, ours)
        assert torch.equal(state[f"network.{ours}"], torch.from_numpy(blobs[key])), (key, ours)
    counters = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert len(counters) == 53 and all(int(c) == 0 and c.dtype == torch.int64 for c in counters)
    assert len(state) == len(params) + 53


def test_pytorchvideo_i3d_keeps_names_under_network(files, converted) -> None:
    state, (_, source) = converted["pytorchvideo_i3d"], files["pytorchvideo_i3d"]
    expected = {f"network.{k}": v for k, v in source.items() if not k.startswith("blocks.6.")}
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], torch.from_numpy(v)) for k, v in expected.items())


def test_pytorchvideo_i3d_loads_strictly(converted) -> None:
    pytest.importorskip("pytorchvideo", reason="our pytorchvideo layout needs pytorchvideo")
    MotionFeatures("pytorchvideo").load_state_dict(converted["pytorchvideo_i3d"], strict=True)


def test_torchvision_resnet_loads_strictly(files, converted) -> None:
    state, (_, source) = converted["torchvision_resnet"], files["torchvision_resnet"]
    GlobalAppearance().load_state_dict(state, strict=True)
    expected = {f"backbone.{k}": v for k, v in source.items() if not k.startswith("fc.")}
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], torch.from_numpy(v)) for k, v in expected.items())


def test_missing_batch_counters_are_filled(tmp_path, files) -> None:
    """V1 torchvision files may lack num_batches_tracked; our BatchNorm2d needs it."""
    source = files["torchvision_resnet"][1]
    path = tmp_path / "resnet152-394f9c45.pth"
    torch.save({k: torch.from_numpy(v) for k, v in source.items() if "num_batches" not in k}, path)
    state = convert("torchvision_resnet", path)
    assert int(state["backbone.layer3.35.bn3.num_batches_tracked"]) == 0
    assert len(state) == 930


# ---------------------------------------------------------------- failure modes


def test_coco_detector_is_refused(tmp_path, files) -> None:
    state = as_torch(files["hf_frcnn"][1])
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 2048)
    path = tmp_path / "coco.bin"
    torch.save(state, path)
    message = (
        r"coco\.bin is not the unc-nlp.*expected key "
        r"'roi_heads\.box_predictor\.cls_score\.weight' with shape \(1601, 2048\), found shape "
        r"\(81, 2048\)"
    )
    with pytest.raises(ConversionError, match=message):
        convert("hf_frcnn", path)


def test_file_without_attribute_head_is_refused(tmp_path, files) -> None:
    """airsplay's faster_rcnn_from_caffe.pkl (no '_attr') lacks the attribute head."""
    source = {k: v for k, v in files["detectron2_pkl"][1].items() if "attr" not in k}
    source = {k: v for k, v in source.items() if "cls_embedding" not in k}
    path = tmp_path / "faster_rcnn_from_caffe.pkl"
    with path.open("wb") as file:
        pickle.dump({"model": source, "__author__": "airsplay"}, file, protocol=4)
    with pytest.raises(ConversionError, match=r"lacks|without '_attr'") as error:
        convert("detectron2_pkl", path)
    assert "cls_embedding.weight' with shape (1601, 256)" in str(error.value)


def test_milvlg_bare_state_dict_and_wrong_format_choice(tmp_path, files, converted) -> None:
    """MILVLG may publish a bare state dict; read as the HF format, its 24-channel RPN shows."""
    path = tmp_path / "bua-caffe-frcn-r101-k10-100.pth"
    torch.save(as_torch(files["milvlg_bua"][1]), path)
    state = convert("milvlg_bua", path)
    assert all(torch.equal(state[k], v) for k, v in converted["milvlg_bua"].items())
    with pytest.raises(ConversionError, match=r"objectness_logits\.weight' with shape \(12,"):
        convert("hf_frcnn", path)


def test_unknown_extra_key_is_refused(tmp_path, files) -> None:
    source = files["pytorchvideo_i3d"][1]
    extra = np.zeros((512, 2048, 1, 1, 1), np.float32)
    state = {k: torch.from_numpy(v) for k, v in source.items()}
    state["blocks.5.res_blocks.3.branch2.conv_a.weight"] = torch.from_numpy(extra)  # an R101
    torch.save({"model_state": state}, tmp_path / "r101.pyth")
    message = r"unexpected key 'blocks\.5\.res_blocks\.3\.branch2\.conv_a\.weight'"
    with pytest.raises(ConversionError, match=message):
        convert("pytorchvideo_i3d", tmp_path / "r101.pyth")


def test_dropped_key_is_refused(tmp_path, files) -> None:
    blobs = files["caffe2_i3d"][1]
    variant = {k: v for k, v in blobs.items() if k != "res4_5_branch2c_bn_riv"}
    write_py2_pickle(tmp_path / "cut.pkl", {"blobs": variant})
    message = (
        r"cut\.pkl is not the video-nonlocal-net .*'res4_5_branch2c_bn_riv' with shape \(1024,\)"
    )
    with pytest.raises(ConversionError, match=message):
        convert("caffe2_i3d", tmp_path / "cut.pkl")


def test_resnet101_is_refused(tmp_path) -> None:
    layout = torchvision_resnet_layout(blocks=(3, 4, 23, 3))
    path = tmp_path / "resnet101.pth"
    torch.save({k: torch.zeros(s) for k, s in layout.items()}, path)
    with pytest.raises(ConversionError, match=r"layer2\.4\.conv1\.weight' with shape \(128, 512"):
        convert("torchvision_resnet", path)


@pytest.mark.parametrize("fmt", ["detectron2_pkl", "hf_frcnn", "caffe2_i3d", "pytorchvideo_i3d"])
def test_truncated_file_is_reported(tmp_path, files, fmt) -> None:
    path = tmp_path / files[fmt][0].name
    with files[fmt][0].open("rb") as file:
        path.write_bytes(file.read(1 << 20))
    with pytest.raises(ConversionError, match=re.escape(str(path))):
        convert(fmt, path)


def test_missing_file_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="download it first"):
        convert("caffe2_i3d", tmp_path / "absent.pkl")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["detectron2_pkl", "caffe2_i3d"])
def test_pickle_that_runs_code_is_refused(tmp_path, fmt) -> None:
    marker = tmp_path / "owned"
    payload = {"conv1_w": _RunsCode(marker)}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": payload, "blobs": payload}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load .*evil\.pkl.*system"):
        convert(fmt, path)
    assert not marker.exists()


def test_safe_pickle_reads_python2_arrays_and_refuses_other_globals(tmp_path) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "py2.pkl"
    write_py2_pickle(path, {"blobs": {"w": array, "model_iter": 7}})
    loaded = load_pickle(path)["blobs"]
    assert np.array_equal(loaded["w"], array) and loaded["model_iter"] == 7

    evil = b"\x80\x02c__builtin__\neval\nX\x06\x00\x00\x001 + 1\x85R."
    (tmp_path / "eval.pkl").write_bytes(evil)
    with pytest.raises(UnsafePickleError, match=r"__builtin__\.eval"):
        load_pickle(tmp_path / "eval.pkl")
    codec = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R."
    (tmp_path / "codec.pkl").write_bytes(codec)
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_pickle(tmp_path / "codec.pkl")


@pytest.mark.parametrize("fmt", ["hf_frcnn", "pytorchvideo_i3d", "torchvision_resnet"])
def test_unreadable_torch_file_gives_one_line_with_the_cause(tmp_path, fmt) -> None:
    """torch wraps the unpickler's reason into a page advising weights_only=False."""
    path = tmp_path / "random.pth"
    path.write_bytes(random.Random(0).randbytes(100_000))
    with pytest.raises(ConversionError) as error:
        convert(fmt, path)
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message
    assert message.startswith(f"{path} is not a readable torch file (UnpicklingError: ")


# ---------------------------------------------------------------- validation before pinning


def test_hand_placed_detector_is_validated_before_it_is_pinned(
    tmp_path, files, detector, monkeypatch, caplog, capsys
) -> None:
    """A random file placed by hand as the paper's detector is never pinned, fetch and list
    report it; the published file (synthetic, same format) placed there then passes, is pinned,
    converted and installed, each file read and hashed once."""
    entry = get("vg-frcnn-attr-10-100")  # its URL is never contacted: the file is present
    path = tmp_path / entry.filename
    path.write_bytes(random.Random(0).randbytes(100_000))
    with caplog.at_level(logging.ERROR):
        assert commands.fetch_command([entry.name], tmp_path, force=False) == 1
    assert f"{path} is truncated or not a pickle" in caplog.text
    assert f"`masn weights fetch {entry.name}`" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()  # never pinned
    assert not (tmp_path / "detector.pt").exists()
    [status] = list_weights(tmp_path, [entry])
    assert status.state.startswith(f"{CORRUPT}: ") and "not a pickle" in status.state
    assert commands.list_command(tmp_path) == 1
    assert re.search(rf"^{entry.name} .* corrupt: ", capsys.readouterr().out, re.MULTILINE)

    shutil.copyfile(files["detectron2_pkl"][0], path)
    hashed, read = [], []
    monkeypatch.setattr(download, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    monkeypatch.setitem(
        VALIDATORS, entry.format, lambda p: read.append(p) or CONVERTERS[entry.format](p)
    )
    assert commands.fetch_command([entry.name], tmp_path, force=False) == 0
    assert hashed == read == [path]
    record = read_lock(tmp_path)[entry.name]
    assert record["sha256"] == file_sha256(path)
    assert record["validated"]["format"] == "detectron2_pkl"
    state, installed = read_installed(tmp_path, "detector")
    assert installed.sha256 == record["sha256"] and installed.source == entry.name
    detector.load_state_dict(state, strict=True)
    assert list_weights(tmp_path, [entry])[0].state == VERIFIED
    assert read == [path]  # the lock vouches for it: listing hashes, never reads it again
