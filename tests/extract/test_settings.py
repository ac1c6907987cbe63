"""Extraction settings (masn/extract/settings.py): checked when built (what only a network
knows, when it is built), torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from masn import caller
from masn.errors import InvalidInput, MissingInput
from masn.extract.networks.backbones import build_backbone
from masn.extract.settings import DetectorConfig, ExtractionConfig, ExtractSettings, RunOptions


def test_settings_are_checked_when_built():
    with pytest.raises(InvalidInput, match="frame_size must be a whole number >= 32"):
        ExtractionConfig(frame_size=8)
    with pytest.raises(InvalidInput, match="fps must be a positive number"):
        ExtractionConfig(fps=float("nan"))
    with pytest.raises(InvalidInput, match="clip_length must be >= 8 for the nonlocal I3D"):
        build_backbone("motion", "nonlocal", ExtractionConfig(clip_length=4))
    with (  # the command line names its flag
        caller.command_line(),
        pytest.raises(InvalidInput, match="--clip-length must be >= 8 for the nonlocal I3D"),
    ):
        build_backbone("motion", "nonlocal", ExtractionConfig(clip_length=4))
    with pytest.raises(InvalidInput, match="workers must be a whole number >= 0"):
        RunOptions(workers=-1)
    with pytest.raises(InvalidInput, match="unknown decoding backend 'opencv'"):
        RunOptions(decoder="opencv")
    for device in ("gpu", "tpu", "cuda:", "CUDA", "cuda:x", "mps"):
        with pytest.raises(InvalidInput, match="use auto, cpu, cuda or cuda:N"):
            RunOptions(device=device)
    assert RunOptions(device="cuda:1", retry_failed=True).retry_failed


def test_extract_settings_need_videos_and_one_weights_source():
    with pytest.raises(InvalidInput, match="needs --videos DIR"):
        ExtractSettings(out=Path("x.h5"))
    assert ExtractSettings(out=Path("x.h5"), merge=(Path("a.h5"),)).merge == (Path("a.h5"),)
    with pytest.raises(InvalidInput, match="either --weights DIR or --random-weights"):
        ExtractSettings(out=Path("x.h5"), videos=Path("v"), weights=Path("w"), random_weights=True)
    with pytest.raises(InvalidInput, match="min_size 700 is larger than max_size 600"):
        DetectorConfig(min_size=700, max_size=600)
    with pytest.raises(InvalidInput, match="motion must be one of"):
        ExtractionConfig(motion="x3d")


def test_the_settings_import_no_torch_opencv_or_pyav():
    script = (
        "import sys, masn.extract.settings\n"
        "print([m for m in ('torch', 'cv2', 'av', 'h5py') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_optional_backends_name_their_extra_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorchvideo.models.hub.resnet", None)
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(MissingInput, match=r"pip install 'masn\[pytorchvideo\]'"):
        build_backbone("motion", "pytorchvideo", ExtractionConfig(motion="pytorchvideo"))
    with pytest.raises(InvalidInput, match=r"pip install 'masn\[decord\]'"):
        RunOptions(decoder="decord")
