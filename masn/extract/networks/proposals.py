"""Box arithmetic of the Caffe bottom-up-attention detector: anchors, decoding, NMS, selection.

Everything follows py-faster-rcnn's pixel conventions: a box [x1, y1, x2, y2] covers
``x2 - x1 + 1`` pixels, anchors are centred at ``stride * i + 7.5``, and NMS measures overlap
with those +1 areas. These details shift boxes by a pixel or change which boxes survive, so they
are kept exactly (docs/extraction.md, "The detector").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import nms

# Largest log-scale step a regression may apply (Detectron's guard; Caffe had none, which only
# matters for absurd deltas that would overflow exp()).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def caffe_anchors(
    stride: int = 16,
    scales: tuple[float, ...] = (4, 8, 16, 32),
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> Tensor:
    """The base anchors of py-faster-rcnn's ``generate_anchors``, ratio-major, (A, 4) float32.

    A square ``stride`` x ``stride`` box at the origin is reshaped to each aspect ratio keeping its
    area (sizes rounded half-to-even like numpy), then scaled; all share the centre 7.5.
    """
    size = float(stride)
    centre = (size - 1) / 2
    anchors = []
    for ratio in ratios:
        width = torch.round(torch.tensor(math.sqrt(size * size / ratio), dtype=torch.float64))
        height = torch.round(width * ratio)
        for scale in scales:
            w, h = width * scale, height * scale
            anchors.append([centre - (w - 1) / 2, centre - (h - 1) / 2])
            anchors[-1] += [centre + (w - 1) / 2, centre + (h - 1) / 2]
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(base: Tensor, height: int, width: int, stride: int) -> Tensor:
    """Anchors at every feature-map cell, (H * W * A, 4) in row-major cell order, anchor minor."""
    ys = torch.arange(height, device=base.device, dtype=base.dtype) * stride
    xs = torch.arange(width, device=base.device, dtype=base.dtype) * stride
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
    return (shifts + base.unsqueeze(0)).reshape(-1, 4)


def decode_boxes(anchors: Tensor, deltas: Tensor) -> Tensor:
    """py-faster-rcnn ``bbox_transform_inv``: (dx, dy, dw, dh) applied with +1 widths."""
    widths = anchors[:, 2] - anchors[:, 0] + 1.0
    heights = anchors[:, 3] - anchors[:, 1] + 1.0
    centre_x = anchors[:, 0] + 0.5 * widths
    centre_y = anchors[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas.unbind(dim=-1)
    x = dx * widths + centre_x
    y = dy * heights + centre_y
    w = torch.exp(dw.clamp(max=MAX_LOG_SCALE)) * widths
    h = torch.exp(dh.clamp(max=MAX_LOG_SCALE)) * heights
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Clips to the last pixel (``width - 1``, ``height - 1``), the Caffe convention."""
    x = boxes[:, 0::2].clamp(0, width - 1)
    y = boxes[:, 1::2].clamp(0, height - 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=-1)


def box_sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Widths and heights with the +1 pixel convention."""
    return boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0


def nms_plus_one(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Greedy NMS measuring overlap with +1 areas (Caffe's ``nms``); indices by falling score.

    Extending x2 and y2 by one pixel turns torchvision's continuous IoU into the +1 one.
    """
    grown = boxes.clone()
    grown[:, 2:] += 1.0
    return nms(grown, scores, threshold)


def overlaps_plus_one(boxes: Tensor) -> Tensor:
    """(..., R, R) IoU of every pair of boxes (..., R, 4) with +1 areas."""
    widths, heights = (boxes[..., 2] - boxes[..., 0] + 1.0), (boxes[..., 3] - boxes[..., 1] + 1.0)
    areas = widths * heights
    left = torch.maximum(boxes[..., :, None, 0], boxes[..., None, :, 0])
    top = torch.maximum(boxes[..., :, None, 1], boxes[..., None, :, 1])
    right = torch.minimum(boxes[..., :, None, 2], boxes[..., None, :, 2])
    bottom = torch.minimum(boxes[..., :, None, 3], boxes[..., None, :, 3])
    inter = (right - left + 1.0).clamp(min=0) * (bottom - top + 1.0).clamp(min=0)
    return inter / (areas[..., :, None] + areas[..., None, :] - inter)


def per_class_nms_max_score(boxes: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """For each box, its highest score over the classes in which per-class NMS keeps it.

    boxes (F, R, 4) for F images, scores (F, R, C) (background column excluded). This is the
    bottom-up-attention rule (``max_conf`` in generate_tsv.py), computed for all classes at once:
    the loop runs over the R score ranks, each step advancing every class's greedy NMS by one
    candidate, so its length is the number of boxes (300), never the number of classes (1600).
    Returns (F, R).
    """
    frames, count, classes = scores.shape
    overlap = overlaps_plus_one(boxes) > threshold  # F, R, R
    order = scores.argsort(dim=1, descending=True, stable=True)  # F, rank, C
    suppressed = torch.zeros(frames, classes, count, dtype=torch.bool, device=scores.device)
    kept = torch.zeros_like(suppressed)
    for rank in range(count):
        candidate = order[:, rank, :].unsqueeze(2)  # F, C, 1
        fresh = ~suppressed.gather(2, candidate)
        kept.scatter_(2, candidate, fresh)
        suppressed |= overlap.gather(1, candidate.expand(-1, -1, count)) & fresh
    kept_scores = torch.where(kept.transpose(1, 2), scores, torch.zeros_like(scores))
    return kept_scores.amax(dim=2)


def select_boxes(max_conf: Tensor, valid: Tensor, count: int, threshold: float) -> Tensor:
    """Indices (F, count) of the boxes bottom-up-attention writes for each image.

    Boxes with ``max_conf >= threshold`` are kept in proposal order when there are exactly
    ``count`` of them; otherwise the ``count`` best by ``max_conf`` are taken (MIN_BOXES =
    MAX_BOXES = count). Padding boxes (``valid`` False) are never chosen while real ones remain;
    an image with fewer than ``count`` real boxes repeats its best ones.
    """
    boxes = max_conf.shape[1]
    ranked = torch.where(valid, max_conf, torch.full_like(max_conf, -1.0))
    best = ranked.argsort(dim=1, descending=True, stable=True)
    confident = ranked >= threshold
    positions = torch.arange(boxes, device=max_conf.device)
    in_order = torch.where(confident, positions, positions + boxes).argsort(dim=1, stable=True)
    exact = (confident.sum(dim=1) == count).unsqueeze(1)
    chosen = torch.where(exact, in_order, best)
    available = valid.sum(dim=1, keepdim=True).clamp(min=1, max=count)
    slots = torch.arange(count, device=max_conf.device).unsqueeze(0)
    return chosen.gather(1, torch.remainder(slots, available))
