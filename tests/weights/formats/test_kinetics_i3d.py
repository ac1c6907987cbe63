"""The I3D formats (caffe2_i3d, pytorchvideo_i3d): synthetic files of the exact published
structure are converted with the expected names and strictly loaded into our motion network."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from masn.extract.networks.backbones import build_backbone
from masn.extract.settings import ExtractionConfig
from masn.weights.formats.registry import convert
from masn.weights.formats.source_tensors import ConversionError
from tests.weights.published import caffe2_i3d_layout, write_py2_pickle


def test_caffe2_i3d_loads_strictly_with_tushar_names(files, converted) -> None:
    state, (_, blobs) = converted["caffe2_i3d"], files["caffe2_i3d"]
    build_backbone("motion", "nonlocal", ExtractionConfig()).load_state_dict(state, strict=True)
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
    network = build_backbone("motion", "pytorchvideo", ExtractionConfig())
    network.load_state_dict(converted["pytorchvideo_i3d"], strict=True)


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
