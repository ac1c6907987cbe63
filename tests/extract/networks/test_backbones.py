"""Backbones register next to their modules and are listed without torch: the I3D choices of the
settings come from there; a toy backbone with a toy weights format goes through the real paths
(fetch and validation, installation, network construction, strict loading), then leaves."""

from __future__ import annotations

import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from masn.errors import InvalidInput
from masn.extract.networks.backbones import (
    BACKBONES,
    MotionBackbone,
    backbone,
    backbone_names,
    build_backbone,
)
from masn.extract.networks.feature_networks import load_installed
from masn.extract.networks.i3d import I3DResNet50, MotionFeatures
from masn.extract.settings import ExtractionConfig
from masn.weights.download import fetch
from masn.weights.formats.registry import FORMATS, format_names, weights_format
from masn.weights.installed import install
from masn.weights.manifest import WeightEntry
from masn.weights.verification import VerificationError

TOY_SHAPE = (4, 3, 8, 32, 32)  # 4 channels from 8 frames of 32 x 32 pixels


def test_the_i3d_choices_come_from_the_registered_backbones() -> None:
    assert backbone_names("i3d") == ("nonlocal", "pytorchvideo")
    assert typing.get_args(MotionBackbone) == backbone_names("i3d")
    assert typing.get_type_hints(ExtractionConfig)["i3d"] == MotionBackbone
    assert isinstance(build_backbone("i3d", "nonlocal"), I3DResNet50)
    with pytest.raises(KeyError, match="unknown i3d backbone 'x3d'; known: nonlocal, pytorchvideo"):
        build_backbone("i3d", "x3d")


def test_settings_and_the_choices_load_without_torch_opencv_or_pyav() -> None:
    script = (
        "import sys; import masn.extract.settings as s; "
        "print(sorted({'torch', 'cv2', 'av'} & set(sys.modules))); "
        "print(s.ExtractionConfig(i3d='pytorchvideo').i3d)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "pytorchvideo"]


class ToyI3D(nn.Module):
    """One strided 3-D convolution: clips (B, 3, 8, H, W) -> maps (B, 4, 1, H / 32, W / 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, TOY_SHAPE[2:], stride=TOY_SHAPE[2:])

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.conv(clips)


def read_toy_npz(path: Path) -> dict[str, torch.Tensor]:
    """The toy weights format: an .npz holding ``kernel`` (4, 3, 8, 32, 32) and ``offset`` (4)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            kernel, offset = arrays["kernel"], arrays["offset"]
    except (OSError, ValueError, KeyError) as error:
        raise InvalidInput(f"{path} is not a toy I3D file ({error})") from None
    if kernel.shape != TOY_SHAPE or offset.shape != TOY_SHAPE[:1]:
        raise InvalidInput(f"{path} is not a toy I3D file: shapes {kernel.shape}, {offset.shape}")
    return {
        "network.conv.weight": torch.from_numpy(kernel),
        "network.conv.bias": torch.from_numpy(offset),
    }


@pytest.fixture
def toy() -> Iterator[None]:
    backbone("toy", role="i3d")(ToyI3D)
    weights_format("toy_npz", role="i3d", layout="toy")(read_toy_npz)
    yield
    BACKBONES.remove("toy")
    FORMATS.remove("toy_npz")
    assert "toy" not in backbone_names("i3d") and "toy_npz" not in format_names()


def toy_entry() -> WeightEntry:
    return WeightEntry(
        name="toy-i3d",
        role="i3d",
        format="toy_npz",
        urls=("http://127.0.0.1:9/unreachable",),
        filename="toy-i3d.npz",
        size=None,
        sha256=None,
        sha256_prefix=None,
        licence="test",
        page="http://127.0.0.1/",
        description="a toy I3D",
        default=False,
    )


@torch.no_grad()
def test_a_toy_backbone_and_its_weights_format_go_through_the_real_paths(
    toy: None, tmp_path: Path
) -> None:
    assert backbone_names("i3d") == ("nonlocal", "pytorchvideo", "toy")
    entry = toy_entry()
    path = tmp_path / entry.filename
    path.write_bytes(b"not an npz")
    with pytest.raises(VerificationError, match="is not a toy I3D file"):
        fetch(entry, tmp_path)  # the registered validator refuses it

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(TOY_SHAPE, dtype=np.float32)
    offset = rng.standard_normal(TOY_SHAPE[:1], dtype=np.float32)
    np.savez(path, kernel=kernel, offset=offset)
    record = install(entry, fetch(entry, tmp_path), tmp_path)
    assert (record.format, record.layout) == ("toy_npz", "toy")

    motion = MotionFeatures("toy")  # built by the registry
    assert isinstance(motion.network, ToyI3D)
    assert load_installed(motion, "i3d", tmp_path, "toy").startswith("toy-i3d (toy-i3d.npz")
    assert np.array_equal(motion.network.conv.weight.numpy(), kernel)
    clips = torch.randint(0, 256, (2, 8, 64, 96, 3), dtype=torch.uint8)
    boxes = torch.tensor([[[0.0, 0, 40, 30], [10, 5, 90, 60]]]).repeat(2, 1, 1)
    sizes = torch.tensor([[96, 64], [96, 64]])
    motion_global, motion_objects = motion.eval()(clips, boxes, sizes)
    assert motion_global.shape == (2, 4) and motion_objects.shape == (2, 2, 4)
    with pytest.raises(ValueError, match="has the toy layout but --i3d nonlocal"):
        load_installed(MotionFeatures("nonlocal"), "i3d", tmp_path, "nonlocal")
