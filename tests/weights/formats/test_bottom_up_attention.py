"""The bottom-up-attention detector formats (detectron2_pkl, hf_frcnn, milvlg_bua): synthetic
files of the exact published structure are converted and strictly loaded into our detector; the
class order, the attribute head and the RPN transforms are checked against the sources' math."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from masn.extract.networks.detector import AttributeHead, RPNHead
from masn.extract.networks.proposals import caffe_anchors
from masn.weights.formats.bottom_up_attention import anchor_order
from masn.weights.formats.registry import convert
from masn.weights.formats.source_tensors import ConversionError
from tests.weights.published import as_torch, d2_cell_anchors


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
