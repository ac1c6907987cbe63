"""Reading published files: truncated, missing and unreadable files give one clear line."""

from __future__ import annotations

import random
import re

import pytest

from masn.weights.formats.registry import convert
from masn.weights.formats.source_tensors import ConversionError


@pytest.mark.parametrize("fmt", ["detectron2_pkl", "hf_frcnn", "caffe2_i3d", "pytorchvideo_i3d"])
def test_truncated_file_is_reported(tmp_path, files, fmt) -> None:
    path = tmp_path / files[fmt][0].name
    with files[fmt][0].open("rb") as file:
        path.write_bytes(file.read(1 << 20))
    with pytest.raises(ConversionError, match=re.escape(str(path))):
        convert(fmt, path)


def test_missing_file_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="download it first"):
        convert("caffe2_i3d", tmp_path / "absent.pkl")


@pytest.mark.parametrize("fmt", ["hf_frcnn", "pytorchvideo_i3d", "torchvision_resnet"])
def test_unreadable_torch_file_gives_one_line_with_the_cause(tmp_path, fmt) -> None:
    """torch wraps the unpickler's reason into a page advising weights_only=False."""
    path = tmp_path / "random.pth"
    path.write_bytes(random.Random(0).randbytes(100_000))
    with pytest.raises(ConversionError) as error:
        convert(fmt, path)
    message = str(error.value)
    assert "\n" not in message and "weights_only" not in message
    assert message.startswith(f"{path} is not a readable torch file (UnpicklingError: ")
