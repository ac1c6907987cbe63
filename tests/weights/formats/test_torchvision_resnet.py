"""The torchvision_resnet format: a synthetic ResNet-152 file is converted under ``backbone.``
and strictly loaded into our global-appearance network; other ResNets are refused."""

from __future__ import annotations

import pytest
import torch

from masn.extract.networks.resnet import GlobalAppearance
from masn.weights.formats.registry import convert
from masn.weights.formats.source_tensors import ConversionError
from tests.weights.published import torchvision_resnet_layout


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


def test_resnet101_is_refused(tmp_path) -> None:
    layout = torchvision_resnet_layout(blocks=(3, 4, 23, 3))
    path = tmp_path / "resnet101.pth"
    torch.save({k: torch.zeros(s) for k, s in layout.items()}, path)
    with pytest.raises(ConversionError, match=r"layer2\.4\.conv1\.weight' with shape \(128, 512"):
        convert("torchvision_resnet", path)
