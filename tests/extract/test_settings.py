"""Extraction settings (masn/extract/settings.py): checked when built, torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from masn.errors import InvalidInput
from masn.extract.settings import DetectorConfig, ExtractionConfig, ExtractSettings, RunOptions


def test_settings_are_checked_when_built():
    with pytest.raises(InvalidInput, match="frame_size must be a whole number >= 32"):
        ExtractionConfig(frame_size=8)
    with pytest.raises(InvalidInput, match="fps must be a positive number"):
        ExtractionConfig(fps=float("nan"))
    with pytest.raises(InvalidInput, match="clip_length must be >= 8 for the nonlocal I3D"):
        ExtractionConfig(clip_length=4)
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
    with pytest.raises(InvalidInput, match="i3d must be one of"):
        ExtractionConfig(i3d="x3d")


def test_the_settings_import_no_torch_opencv_or_pyav():
    script = (
        "import sys, masn.extract.settings\n"
        "print([m for m in ('torch', 'cv2', 'av', 'h5py') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_optional_backends_name_their_extra_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorchvideo", None)
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(InvalidInput, match=r"pip install 'masn\[pytorchvideo\]'"):
        ExtractionConfig(i3d="pytorchvideo")
    with pytest.raises(InvalidInput, match=r"pip install 'masn\[decord\]'"):
        RunOptions(decoder="decord")
