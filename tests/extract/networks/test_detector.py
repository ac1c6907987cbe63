"""The Caffe semantics of the VG detector, each proven on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_pool

from masn.errors import InvalidInput
from masn.extract.networks.detector import (
    PIXEL_MEANS_BGR,
    BoxHead,
    Detector,
    DetectorConfig,
    Trunk,
    preprocess,
)


def test_stem_max_pool_has_no_padding_and_rounds_up():
    trunk = Trunk()
    assert trunk.conv1.stride == (2, 2) and trunk.conv1.padding == (3, 3)
    x = torch.arange(36.0).view(1, 1, 6, 6)
    pooled = F.max_pool2d(x, 3, stride=2, padding=0, ceil_mode=True)
    # Caffe pool1 on 6x6: windows start at 0, 2, 4; the last one is cut at the border
    assert pooled.shape == (1, 1, 3, 3)
    assert pooled[0, 0].tolist() == [[14, 16, 17], [26, 28, 29], [32, 34, 35]]
    # the trunk uses it: 600 x 1000 input gives the measured 38 x 63 map (pool 150 x 250)
    with torch.no_grad():
        stem = F.relu(trunk.bn1(trunk.conv1(torch.zeros(1, 3, 600, 1000))))
    assert F.max_pool2d(stem, 3, 2, 0, ceil_mode=True).shape[-2:] == (150, 250)
    assert F.max_pool2d(stem, 3, 2, 1).shape[-2:] == (150, 250)  # torchvision's differs elsewhere:
    odd = torch.zeros(1, 1, 149, 149)
    assert F.max_pool2d(odd, 3, 2, 0, ceil_mode=True).shape[-1] == 74
    assert F.max_pool2d(odd, 3, 2, 1).shape[-1] == 75


def test_stride_sits_in_the_first_1x1_convolution():
    trunk = Trunk()
    for stage in (trunk.layer2, trunk.layer3):
        first = stage[0]
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
        assert first.downsample[0].stride == (2, 2)
    # functional check: the 1x1 subsamples before the 3x3 sees its neighbours
    block = trunk.layer2[0].eval()
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        assert block(x).shape == (1, 512, 4, 4)
        reference = F.conv2d(x[:, :, ::2, ::2], block.conv1.weight)
        torch.testing.assert_close(block.conv1(x), reference)


def test_res5_has_stride_one_and_dilation_two_in_every_block():
    head = BoxHead()
    for block in head.layer4:
        assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
        assert block.conv1.stride == (1, 1)
    with torch.no_grad():
        out = head.layer4(torch.randn(2, 1024, 14, 14))
    assert out.shape == (2, 2048, 14, 14)


def test_preprocess_is_caffe_bgr_minus_means_resized_by_cv2():
    frame = np.zeros((240, 320, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 200, 100, 50  # R, G, B
    image, scale = preprocess(frame)
    assert scale == 2.5 and image.shape == (3, 600, 800) and image.dtype == np.float32
    expected = [50 - PIXEL_MEANS_BGR[0], 100 - PIXEL_MEANS_BGR[1], 200 - PIXEL_MEANS_BGR[2]]
    np.testing.assert_allclose(image[:, 300, 400], expected, rtol=1e-6)
    # the long side is capped at 1000 (a 100 x 1000 frame keeps its size), sizes are rounded
    assert preprocess(np.zeros((100, 1000, 3), np.uint8))[0].shape == (3, 100, 1000)
    assert preprocess(np.zeros((333, 500, 3), np.uint8))[0].shape == (3, 600, 901)


def test_roi_pool_is_caffe_max_pooling_with_rounded_boxes():
    features = torch.arange(64.0).view(1, 1, 8, 8)
    # box 0..63 px at stride 16 covers cells round(0/16)=0 .. round(63/16)=4 -> 5x5 cells
    pooled = roi_pool(features, torch.tensor([[0.0, 0.0, 0.0, 63.0, 63.0]]), (2, 2), 1 / 16)
    # bins of 2.5 cells: rows/cols [0, 3) and [2, 5): maxima at (2, 2), (2, 4), (4, 2), (4, 4)
    assert pooled[0, 0].tolist() == [[18.0, 20.0], [34.0, 36.0]]


def test_rpn_drops_small_boxes_before_taking_the_top_scores(monkeypatch):
    config = DetectorConfig(pre_nms_top_n=2, post_nms_top_n=5, rpn_nms=0.99)
    detector = Detector(config).eval()
    features = torch.zeros(1, 1024, 2, 2)
    logits = torch.zeros(1, 12, 2, 2)
    deltas = torch.zeros(1, 48, 2, 2)
    logits[0, :6] = 10.0  # the best-scored anchors...
    deltas.view(1, 12, 4, 2, 2)[0, :6, 2:] = -5.0  # ...shrink below the 16-pixel minimum
    monkeypatch.setattr(detector.rpn, "forward", lambda f: (logits, deltas))
    (proposals,) = detector.proposals(features, (400, 400), [1.0])
    assert len(proposals) == 2  # top-2 of the large ones, not an empty top-2 of the small ones
    widths = proposals[:, 2] - proposals[:, 0] + 1
    assert (widths >= 16).all()


def test_attribute_head_embeds_the_argmax_over_all_classes_background_included(monkeypatch):
    detector = Detector(DetectorConfig(min_size=64, max_size=96, post_nms_top_n=12)).eval()
    seen = {}
    original = detector.attributes.forward

    def spy(features, classes):
        seen["classes"] = classes
        return original(features, classes)

    monkeypatch.setattr(detector.attributes, "forward", spy)
    with torch.no_grad():
        detector.classifier.bias.zero_()
        detector.classifier.bias[0] = 50.0  # background wins every argmax
        image, scale = preprocess(np.full((64, 80, 3), 128, np.uint8), detector.config)
        detector(torch.from_numpy(image)[None], [scale])
    assert (seen["classes"] == 0).all()


def test_detector_outputs_exactly_ten_boxes_inside_the_frame():
    torch.manual_seed(0)
    config = DetectorConfig(min_size=96, max_size=160, post_nms_top_n=12)
    detector = Detector(config).eval()
    frames = [np.random.default_rng(i).integers(0, 255, (90, 120, 3), np.uint8) for i in range(2)]
    batch = [preprocess(f, config) for f in frames]
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    with torch.no_grad():
        first = detector(images, [b[1] for b in batch])
        again = detector(images, [b[1] for b in batch])
    assert first.boxes.shape == (2, 10, 4) and first.features.shape == (2, 10, 2048)
    # Caffe clips to the resized image's last pixel, then divides by the scale: inside [0, W]
    assert (first.boxes[..., 0] >= 0).all() and (first.boxes[..., 2] <= 120).all()
    assert (first.boxes[..., 1] >= 0).all() and (first.boxes[..., 3] <= 90).all()
    assert (first.boxes[..., 2] >= first.boxes[..., 0]).all()
    assert torch.isfinite(first.features).all()
    assert first.object_labels.max() < 1600 and first.attribute_labels.max() < 400
    for name, value in vars(first).items():
        assert torch.equal(value, getattr(again, name)), name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_size": 0}, "min_size must be a whole number >= 1"),
        ({"max_size": -5}, "max_size must be a whole number >= 1"),
        ({"post_nms_top_n": 0}, r"proposals \(post_nms_top_n\) must be"),
        ({"boxes": 0}, "boxes must be"),
        ({"min_size": 800, "max_size": 600}, "larger than max_size"),
        ({"rpn_nms": 1.5}, r"rpn_nms must lie in \[0, 1\]"),
    ],
)
def test_detector_settings_are_checked_when_built(settings, message):
    with pytest.raises(InvalidInput, match=message):
        DetectorConfig(**settings)


@pytest.fixture(scope="module")
def tiny_detector() -> Detector:
    torch.manual_seed(0)
    return Detector(DetectorConfig(min_size=32, max_size=64, post_nms_top_n=4)).eval()


@pytest.mark.parametrize(("height", "width"), [(1, 1), (9, 17), (2000, 16), (20000, 1)])
def test_frames_smaller_than_the_detector_takes_give_boxes_inside_them(
    tiny_detector, height, width
):
    image, scale = preprocess(np.full((height, width, 3), 90, np.uint8), tiny_detector.config)
    assert min(image.shape[1:]) >= 1  # 16 x 2000 at a 64-pixel cap: 1 pixel wide, not 0
    with torch.no_grad():
        found = tiny_detector(torch.from_numpy(image)[None], [scale])
    assert found.boxes.shape == (1, 10, 4) and torch.isfinite(found.features).all()
    x1, y1, x2, y2 = found.boxes[0].unbind(-1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 >= x1).all() and (y2 >= y1).all()
    assert (x2 <= width).all() and (y2 <= height).all()


def test_rpn_keeps_every_proposal_of_a_frame_under_sixteen_pixels(tiny_detector):
    # 17 x 9 at the paper's 600/1000: scale 58.8, so the 16-pixel minimum is 941 resized
    # pixels while the image is 529 high: the filter alone would leave no proposal.
    image, scale = preprocess(np.zeros((9, 17, 3), np.uint8), DetectorConfig())
    assert image.shape[1:] == (529, 1000)
    features = torch.zeros(1, 1024, 34, 63)
    with torch.no_grad():
        (proposals,) = tiny_detector.proposals(features, image.shape[1:], [scale])
    assert 0 < len(proposals) <= tiny_detector.config.post_nms_top_n
    assert (proposals[:, 2] <= 999).all() and (proposals[:, 3] <= 528).all()
