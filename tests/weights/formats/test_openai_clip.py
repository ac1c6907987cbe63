"""OpenAI's CLIP ViT-B/16 archive (TorchScript, float16) converted to our appearance network's
names; damaged, misshapen and code-running archives are refused in one line naming the file."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from masn.unpickle import UnsafePickleError
from masn.weights.formats.openai_clip import convert_openai_clip, image_tower_shapes
from masn.weights.formats.source_tensors import ConversionError
from tests.weights.published import CLIP_TINY, write_openai_clip

MODEL = r"OpenAI's CLIP ViT-B/16 \(ViT-B-16\.pt\)"

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An archive in OpenAI's layout with a tiny architecture (valid, but not ViT-B/16)."""
    path = tmp_path_factory.mktemp("tiny_clip") / "ViT-B-16.pt"
    write_openai_clip(path, CLIP_TINY)
    return path


def _rewritten(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """``source`` with the records named in ``replace`` given new contents."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, replace.get(info.filename, old.read(info)))
    return target


def _refusal(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_the_published_archive_converts_to_the_image_tower(openai_clip_file: Path) -> None:
    state = convert_openai_clip(openai_clip_file)
    assert {key: tuple(value.shape) for key, value in state.items()} == image_tower_shapes()
    assert len(state) == 152 and all(value.dtype == torch.float32 for value in state.values())
    published = torch.jit.load(str(openai_clip_file), map_location="cpu").state_dict()
    for key, value in state.items():
        assert published[f"visual.{key}"].dtype == torch.float16
        assert torch.equal(value, published[f"visual.{key}"].float()), key


def test_another_architecture_is_refused(tiny_archive: Path) -> None:
    with pytest.raises(ConversionError) as error:
        convert_openai_clip(tiny_archive)
    assert _refusal(error, tiny_archive) == (
        f"{tiny_archive} is not OpenAI's CLIP ViT-B/16 (ViT-B-16.pt): expected key "
        "'visual.conv1.weight' with shape (768, 3, 16, 16), found shape (64, 3, 16, 16)"
    )


def test_an_archive_missing_tensors_is_refused(tmp_path: Path) -> None:
    model = nn.Module()
    model.visual = nn.Module()
    model.visual.conv1 = nn.Conv2d(3, 768, 16, 16, bias=False)
    model.visual.class_embedding = nn.Parameter(torch.zeros(768, dtype=torch.float16))
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(model.half()), str(path))
    with pytest.raises(ConversionError, match=MODEL) as error:
        convert_openai_clip(path)
    assert _refusal(error, path).endswith(
        "expected key 'visual.positional_embedding' with shape (197, 768), which the file lacks"
    )


def _storage_offset(path: Path, record: str) -> int:
    """Where the bytes of ``record`` start in the zip file (after its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(record)
    with path.open("rb") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
    return info.header_offset + 30 + name_length + extra_length


def test_damaged_archives_are_refused(tiny_archive: Path, tmp_path: Path) -> None:
    whole = tiny_archive.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(whole)
    with flipped.open("r+b") as file:  # one byte of a storage changed: its CRC fails
        file.seek(_storage_offset(flipped, "ViT-B-16/data/0") + 3)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))
    short = _rewritten(tiny_archive, tmp_path / "short.pt", {"ViT-B-16/data/0": b"\0" * 6})
    state_dict = tmp_path / "state_dict.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, state_dict)
    reasons = {
        truncated: "BadZipFile",
        flipped: "Bad CRC-32",
        short: "storage 0 holds 6 bytes where",
        state_dict: "no <folder>/data.pkl with constants.pkl beside it",
    }
    for path, reason in reasons.items():
        with pytest.raises(ConversionError) as error:
            convert_openai_clip(path)
        message = _refusal(error, path)
        assert message.startswith(f"{path} is not a readable TorchScript archive (")
        assert reason in message, message
    with pytest.raises(FileNotFoundError, match="download it first"):
        convert_openai_clip(tmp_path / "absent.pt")


class _RunsCode:
    def __init__(self, function, *args):
        self.call = function, args

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize(
    "payload, named",
    [
        (lambda marker: _RunsCode(os.system, f"touch {marker}"), "system"),
        (lambda marker: _RunsCode(exec, f"open({str(marker)!r}, 'w')"), "_builtin__.exec"),
        (lambda marker: _RunsCode(torch.jit.load, str(marker)), "torch.jit._serialization.load"),
        (lambda marker: _RunsCode(getattr, str(marker), "upper"), "_builtin__.getattr"),
    ],
)
def test_an_archive_that_would_run_code_is_refused(tiny_archive, tmp_path, payload, named) -> None:
    marker = tmp_path / "owned"
    data = pickle.dumps(payload(marker), protocol=2)
    path = _rewritten(tiny_archive, tmp_path / "ViT-B-16.pt", {"ViT-B-16/data.pkl": data})
    with pytest.raises(UnsafePickleError) as error:
        convert_openai_clip(path)
    assert _refusal(error, path).startswith(f"refusing to load {path}: it references ")
    assert named in str(error.value) and "could run code" in str(error.value)
    assert not marker.exists()
