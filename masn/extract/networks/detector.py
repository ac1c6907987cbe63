"""The Visual Genome bottom-up-attention Faster R-CNN (ResNet-101 C4, 1600 objects, 400 attributes).

A port of the Caffe model of peteanderson80/bottom-up-attention onto plain modules and torchvision
ops, with the Caffe semantics that decide which boxes come out (docs/extraction.md, "The detector"):
BGR input minus the Caffe means, resized by cv2 to a 600-pixel short side (1000 max); stride in
the 1x1 convolutions; a max-pool without padding that rounds up; an RPN with 512 hidden channels,
py-faster-rcnn anchors and its proposal filter (min size before the 6000 top-k, NMS 0.7, 300
kept); 14x14 RoI max-pooling; a res5 head with stride 1 and dilation 2 in every 3x3; the box
choice of generate_tsv.py over the *proposal* boxes (per-class NMS 0.3, exactly 10 boxes).

Frames smaller than that model can take: a detector input under 16 pixels on a side (one cell of
the feature map; e.g. a 16 x 2000 frame at small detector sizes) is padded with the mean colour
to 16 pixels, and its boxes are clipped to the real image; a frame whose proposals all fall
under the RPN's minimum size (16 pixels of the original frame, so any frame with a side under 16
pixels) keeps its proposals unfiltered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d, roi_pool

from masn.extract.networks.backbones import backbone
from masn.extract.networks.proposals import (
    box_sizes,
    caffe_anchors,
    clip_boxes,
    decode_boxes,
    grid_anchors,
    nms_plus_one,
    per_class_nms_max_score,
    select_boxes,
)
from masn.extract.settings import DetectorConfig, ExtractionConfig

PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)
OBJECT_CLASSES = 1600
ATTRIBUTE_CLASSES = 400


class Bottleneck(nn.Module):
    """ResNet bottleneck with frozen BN, the MSRA/Caffe way: the stride sits in the first 1x1."""

    def __init__(self, inputs: int, width: int, outputs: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 1, stride=stride, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = FrozenBatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outputs, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                FrozenBatchNorm2d(outputs),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


def _stage(blocks: int, inputs: int, width: int, stride: int, dilation: int = 1) -> nn.Sequential:
    outputs = 4 * width
    layers = [Bottleneck(inputs, width, outputs, stride, dilation)]
    layers += [Bottleneck(outputs, width, outputs, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Trunk(nn.Module):
    """res1-res4 of ResNet-101 (C4): stride 16, 1024 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.layer1 = _stage(3, 64, 64, stride=1)
        self.layer2 = _stage(4, 256, 128, stride=2)
        self.layer3 = _stage(23, 512, 256, stride=2)

    def forward(self, images: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(images)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)  # Caffe pool1
        return self.layer3(self.layer2(self.layer1(x)))


class RPNHead(nn.Module):
    """3x3 conv (1024 -> 512) and, per anchor, one objectness logit and four deltas.

    Caffe's 2-way (background, object) softmax is the sigmoid of one logit: converters store
    ``w_object - w_background``.
    """

    def __init__(self, anchors: int, channels: int = 1024, hidden: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.objectness = nn.Conv2d(hidden, anchors, 1)
        self.deltas = nn.Conv2d(hidden, 4 * anchors, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.relu(self.conv(features))
        return self.objectness(hidden), self.deltas(hidden)


class BoxHead(nn.Module):
    """res5 on 14x14 RoI maps (stride 1, dilation 2 in all three blocks), then the mean: 2048-d."""

    def __init__(self):
        super().__init__()
        self.layer4 = _stage(3, 1024, 512, stride=1, dilation=2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.layer4(pooled).mean(dim=(2, 3))


class AttributeHead(nn.Module):
    """Attributes from the region feature and an embedding of the predicted class (argmax over
    all 1601 classes, background included, as the Caffe net's ArgMax layer does)."""

    def __init__(self, features: int = 2048, classes: int = OBJECT_CLASSES + 1):
        super().__init__()
        self.class_embedding = nn.Embedding(classes, 256)
        self.hidden = nn.Linear(features + 256, 512)
        self.score = nn.Linear(512, ATTRIBUTE_CLASSES + 1)

    def forward(self, features: Tensor, classes: Tensor) -> Tensor:
        joint = torch.cat([features, self.class_embedding(classes)], dim=-1)
        return self.score(F.relu(self.hidden(joint)))


@dataclass
class Detections:
    """Per image, the chosen boxes and what the detector says about them (B images, N boxes).

    boxes (B, N, 4) pixels of the original frame; features (B, N, 2048); object_labels and
    attribute_labels (B, N) index the 1600 / 400 Visual Genome vocabularies; *_scores are their
    softmax probabilities.
    """

    boxes: Tensor
    features: Tensor
    object_labels: Tensor
    object_scores: Tensor
    attribute_labels: Tensor
    attribute_scores: Tensor


def preprocess(
    frame_rgb: np.ndarray, config: DetectorConfig = DetectorConfig()
) -> tuple[np.ndarray, float]:
    """Caffe input for one RGB uint8 frame: BGR float32 minus the means, cv2-resized; (3, H, W).

    Returns the image and its scale (resized / original). Done on CPU workers, as Caffe did it.
    A side that would round to 0 pixels (extreme aspect ratios) is kept at 1 pixel.
    """
    image = frame_rgb[:, :, ::-1].astype(np.float32)
    image -= np.array(PIXEL_MEANS_BGR, dtype=np.float32)
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    scale = config.min_size / short
    if round(scale * long) > config.max_size:
        scale = config.max_size / long
    if min(round(scale * height), round(scale * width)) < 1:
        size = (max(1, round(scale * width)), max(1, round(scale * height)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    else:
        resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)), scale


class Detector(nn.Module):
    """Frames in (preprocessed, same size), :class:`Detections` out.

    Under bf16 autocast only the trunk and the res5 head run in bf16; the RPN head, the proposal
    arithmetic and the class and attribute scores that choose the boxes stay float32.
    """

    stride = 16
    feature_width = 2048  # of the region features
    min_input = 16  # smaller inputs are padded (the trunk needs 3 pixels; one feature cell)

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("anchors", caffe_anchors(self.stride), persistent=False)
        self.trunk = Trunk()
        self.rpn = RPNHead(len(self.anchors))
        self.box_head = BoxHead()
        self.classifier = nn.Linear(2048, OBJECT_CLASSES + 1)
        self.attributes = AttributeHead()

    def proposals(
        self, features: Tensor, image_size: tuple[int, int], scales: Sequence[float]
    ) -> list[Tensor]:
        """RPN proposals per image (R_i, 4) in resized-image pixels, best first."""
        config = self.config
        height, width = image_size
        with torch.autocast(features.device.type, enabled=False):
            logits, deltas = self.rpn(features.float())
        batch, _, rows, cols = logits.shape
        anchors = grid_anchors(self.anchors, rows, cols, self.stride)
        scores = logits.float().permute(0, 2, 3, 1).reshape(batch, -1)
        deltas = deltas.float().permute(0, 2, 3, 1).reshape(batch, -1, 4)
        result = []
        for image in range(batch):
            boxes = clip_boxes(decode_boxes(anchors, deltas[image]), height, width)
            box_w, box_h = box_sizes(boxes)
            min_size = config.rpn_min_size * scales[image]
            large = (box_w >= min_size) & (box_h >= min_size)
            if not large.any():  # a frame under 16 pixels: the filter would leave nothing
                large = torch.ones_like(large)
            boxes, image_scores = boxes[large], scores[image][large]
            top = image_scores.argsort(descending=True, stable=True)[: config.pre_nms_top_n]
            boxes, image_scores = boxes[top], image_scores[top]
            keep = nms_plus_one(boxes, image_scores, config.rpn_nms)[: config.post_nms_top_n]
            result.append(boxes[keep])
        return result

    def forward(self, images: Tensor, scales: Sequence[float]) -> Detections:
        """images (B, 3, H, W) from :func:`preprocess` (one size per batch), and their scales."""
        config = self.config
        size = images.shape[-2:]
        short = (max(0, self.min_input - size[1]), max(0, self.min_input - size[0]))
        if any(short):  # zeros are the mean colour of the Caffe input
            images = F.pad(images, (0, short[0], 0, short[1]))
        features = self.trunk(images)
        proposals = self.proposals(features, size, scales)
        counts = [len(p) for p in proposals]
        rois = torch.cat(
            [torch.cat([torch.full_like(p[:, :1], i), p], dim=1) for i, p in enumerate(proposals)]
        )
        # Box coordinates must not pass through bf16: pool from float32 features.
        pooled = roi_pool(features.float(), rois, config.pool_size, 1.0 / self.stride)
        region = self.box_head(pooled).float()
        with torch.autocast(region.device.type, enabled=False):  # scores decide the boxes
            class_probs = torch.softmax(self.classifier(region), dim=-1)
            attribute_logits = self.attributes(region, class_probs.argmax(dim=-1))
        attribute_probs = torch.softmax(attribute_logits, dim=-1)

        padded = max(counts)
        batch = len(proposals)

        def pad(values: Tensor, fill: float = 0.0) -> Tensor:
            out = values.new_full((batch, padded, *values.shape[1:]), fill)
            for i, part in enumerate(values.split(counts)):
                out[i, : len(part)] = part
            return out

        original = torch.cat([p / s for p, s in zip(proposals, scales, strict=True)])
        boxes = pad(original)
        valid = pad(torch.ones(len(rois), dtype=torch.bool, device=rois.device), False)
        objects = pad(class_probs[:, 1:])
        max_conf = per_class_nms_max_score(boxes, objects, config.class_nms)
        chosen = select_boxes(max_conf, valid, config.boxes, config.conf_threshold)

        def take(values: Tensor) -> Tensor:
            index = chosen.view(*chosen.shape, *([1] * (values.dim() - 2)))
            return values.gather(1, index.expand(-1, -1, *values.shape[2:]))

        object_scores, object_labels = take(objects).max(dim=-1)
        attribute_scores, attribute_labels = take(pad(attribute_probs[:, 1:])).max(dim=-1)
        return Detections(
            boxes=take(boxes),
            features=take(pad(region)),
            object_labels=object_labels,
            object_scores=object_scores,
            attribute_labels=attribute_labels,
            attribute_scores=attribute_scores,
        )


@backbone("vg-frcnn", role="detector")
def visual_genome_detector(config: ExtractionConfig) -> Detector:
    """The bottom-up-attention Faster R-CNN (ResNet-101 C4, Visual Genome) with Caffe semantics."""
    return Detector(config.detector)
