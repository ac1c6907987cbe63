"""The detector's proposal machinery with Caffe semantics (anchors, +1 box arithmetic, the
vectorised per-class NMS and the box choice of generate_tsv.py), each proven on hand-built
inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from masn.extract.networks.proposals import (
    caffe_anchors,
    decode_boxes,
    grid_anchors,
    nms_plus_one,
    per_class_nms_max_score,
    select_boxes,
)

# py-faster-rcnn generate_anchors() with its defaults (ratios 0.5, 1, 2; scales 8, 16, 32).
PY_FASTER_RCNN_ANCHORS = [
    [-84, -40, 99, 55],
    [-176, -88, 191, 103],
    [-360, -184, 375, 199],
    [-56, -56, 71, 71],
    [-120, -120, 135, 135],
    [-248, -248, 263, 263],
    [-36, -80, 51, 95],
    [-80, -168, 95, 183],
    [-168, -344, 183, 359],
]


def test_anchors_equal_py_faster_rcnn():
    anchors = caffe_anchors(16, scales=(8, 16, 32))
    assert anchors.tolist() == PY_FASTER_RCNN_ANCHORS
    ours = caffe_anchors()  # bottom-up attention: scales 4, 8, 16, 32, ratio-major
    assert ours.shape == (12, 4)
    assert ours[0].tolist() == [-38, -16, 53, 31]  # ratio 0.5 (23 x 12 base), scale 4
    centres = (ours[:, :2] + ours[:, 2:]) / 2
    assert torch.equal(centres, torch.full_like(centres, 7.5))


def test_grid_anchors_are_cell_major_anchor_minor():
    base = caffe_anchors()
    grid = grid_anchors(base, height=2, width=3, stride=16)
    assert grid.shape == (2 * 3 * 12, 4)
    # cell (row 1, col 2) is the 6th cell; its anchors are shifted by (32, 16)
    torch.testing.assert_close(grid[5 * 12 : 6 * 12], base + torch.tensor([32.0, 16, 32, 16]))


def test_decode_uses_plus_one_widths():
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # 16 x 16 pixels, centre 8
    assert decode_boxes(anchor, torch.zeros(1, 4)).tolist() == [[0.0, 0.0, 16.0, 16.0]]
    moved = decode_boxes(anchor, torch.tensor([[0.5, 0.0, 0.0, 0.0]]))
    assert moved[0, 0].item() == 8.0  # dx scales with the +1 width


def test_nms_overlap_uses_plus_one_areas():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]])
    scores = torch.tensor([0.9, 0.8])
    # +1 areas: IoU = 50 / 150 = 0.33 > 0.3 suppresses; continuous IoU = 36 / 126 = 0.29 keeps
    assert nms_plus_one(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes, scores, 0.3).tolist() == [0, 1]


def _reference_max_conf(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """generate_tsv.py's loop: per class, py_cpu_nms over all boxes, keep the best kept score."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    max_conf = np.zeros(len(boxes))
    for cls in range(scores.shape[1]):
        order = np.argsort(-scores[:, cls], kind="stable")
        keep = []
        while order.size:
            i = order[0]
            keep.append(i)
            rest = order[1:]
            w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            overlap = w * h / (areas[i] + areas[rest] - w * h)
            order = rest[overlap <= threshold]
        keep = np.array(keep)
        max_conf[keep] = np.maximum(max_conf[keep], scores[keep, cls])
    return max_conf


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_class_nms_equals_the_per_class_loop(seed):
    rng = np.random.default_rng(seed)
    frames, count, classes = 3, 40, 25
    corners = rng.uniform(0, 200, (frames, count, 2))
    sizes = rng.uniform(5, 80, (frames, count, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=-1).astype(np.float32)
    scores = rng.dirichlet(np.ones(classes + 1), (frames, count))[..., 1:].astype(np.float32)
    ours = per_class_nms_max_score(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3)
    for f in range(frames):
        expected = _reference_max_conf(boxes[f], scores[f], 0.3)
        np.testing.assert_allclose(ours[f].numpy(), expected, rtol=0, atol=0)


def test_box_selection_rule():
    valid = torch.ones(1, 14, dtype=torch.bool)
    conf = torch.linspace(0.05, 0.9, 14).flip(0).unsqueeze(0).clone()
    # more than 10 above 0.2: the 10 best by confidence
    assert select_boxes(conf, valid, 10, 0.2).tolist() == [list(range(10))]
    # exactly 10 above 0.2: those 10 in proposal order, not by confidence
    exact = torch.tensor(
        [[0.1, 0.5, 0.3, 0.9, 0.1, 0.4, 0.25, 0.6, 0.7, 0.21, 0.22, 0.23, 0.1, 0.1]]
    )
    assert select_boxes(exact, valid, 10, 0.2).tolist() == [[1, 2, 3, 5, 6, 7, 8, 9, 10, 11]]
    # fewer than 10 above 0.2: still the 10 best
    few = torch.tensor([[0.01 * i for i in range(14)]])
    assert select_boxes(few, valid, 10, 0.2).tolist() == [list(range(13, 3, -1))]
    # only 3 real boxes: padding is never chosen, the real ones repeat
    partial = torch.arange(14) < 3
    picked = select_boxes(conf, partial.unsqueeze(0), 10, 0.2)
    assert picked.tolist() == [[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
