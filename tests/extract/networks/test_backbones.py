"""Networks register per role and are listed without torch: the choices of --detector,
--appearance and --motion come from there; a toy motion network with a toy weights format goes
through the real paths (fetch and validation, installation, construction, strict loading), then
leaves."""

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
    AppearanceBackbone,
    DetectorBackbone,
    MotionBackbone,
    backbone,
    backbone_names,
    build_backbone,
)
from masn.extract.networks.feature_networks import FeatureNetworks, load_installed
from masn.extract.networks.i3d import I3DResNet50, MotionFeatures
from masn.extract.settings import DetectorConfig, ExtractionConfig
from masn.settings import unchecked
from masn.weights.download import fetch
from masn.weights.formats.registry import FORMATS, format_names, weights_format
from masn.weights.installed import install
from masn.weights.manifest import WeightEntry
from masn.weights.verification import VerificationError

TOY_SHAPE = (4, 3, 8, 32, 32)  # 4 channels from 8 frames of 32 x 32 pixels


def test_the_choices_come_from_the_registered_networks() -> None:
    assert backbone_names("motion") == ("nonlocal", "pytorchvideo")
    assert backbone_names("detector") == ("vg-frcnn",)
    assert set(backbone_names("appearance")) == {"resnet152", "clip-vit-b16"}
    hints = typing.get_type_hints(ExtractionConfig)
    assert typing.get_args(MotionBackbone) == backbone_names("motion")
    assert hints["motion"] == MotionBackbone and hints["appearance"] == AppearanceBackbone
    assert typing.get_args(DetectorBackbone) == ("vg-frcnn",)
    config = ExtractionConfig(detector=DetectorConfig(min_size=32, max_size=64))
    built = build_backbone("motion", "nonlocal", config)
    assert isinstance(built, MotionFeatures) and isinstance(built.network, I3DResNet50)
    assert build_backbone("detector", "vg-frcnn", config).config == config.detector
    with pytest.raises(
        KeyError, match="unknown motion network 'x3d'; known: nonlocal, pytorchvideo"
    ):
        build_backbone("motion", "x3d", config)
    with pytest.raises(ValueError, match="role 'i3d' is not one of detector, appearance, motion"):
        backbone("x3d", role="i3d")


def test_settings_and_the_choices_load_without_torch_opencv_or_pyav() -> None:
    script = (
        "import sys; import masn.extract.settings as s; "
        "print(sorted({'torch', 'cv2', 'av'} & set(sys.modules))); "
        "print(s.ExtractionConfig(motion='pytorchvideo').motion)"
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


def toy_motion(config: ExtractionConfig) -> MotionFeatures:
    return MotionFeatures(ToyI3D(), channels=TOY_SHAPE[0])


@pytest.fixture
def toy() -> Iterator[None]:
    backbone("toy", role="motion")(toy_motion)
    weights_format("toy_npz", role="motion", backbone="toy")(read_toy_npz)
    yield
    BACKBONES["motion"].remove("toy")
    FORMATS.remove("toy_npz")
    assert "toy" not in backbone_names("motion") and "toy_npz" not in format_names()


def toy_entry() -> WeightEntry:
    return WeightEntry(
        name="toy-i3d",
        role="motion",
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
    assert backbone_names("motion") == ("nonlocal", "pytorchvideo", "toy")
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
    assert (record.format, record.backbone) == ("toy_npz", "toy")

    with unchecked():  # "toy" was added in this process, after the choices were read
        config = ExtractionConfig(motion="toy", detector=DetectorConfig(min_size=32, max_size=64))
    networks = FeatureNetworks.random(config)  # the toy built by the registry
    motion = networks.motion
    assert isinstance(motion.network, ToyI3D)
    assert load_installed(motion, "motion", "toy", tmp_path).startswith("toy-i3d (toy-i3d.npz")
    assert np.array_equal(motion.network.conv.weight.numpy(), kernel)
    clips = torch.randint(0, 256, (2, 8, 64, 96, 3), dtype=torch.uint8)
    boxes = torch.tensor([[[0.0, 0, 40, 30], [10, 5, 90, 60]]]).repeat(2, 1, 1)
    sizes = torch.tensor([[96, 64], [96, 64]])
    motion_global, motion_objects = motion.eval()(clips, boxes, sizes)
    assert motion_global.shape == (2, 4) and motion_objects.shape == (2, 2, 4)
    assert networks.widths["motion"] == networks.widths["motion_objects"] == 4
    with pytest.raises(FileNotFoundError, match="no converted weights of the motion network "):
        load_installed(motion, "motion", "nonlocal", tmp_path)
