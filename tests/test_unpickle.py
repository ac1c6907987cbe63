"""Legacy weight pickles and TorchScript archives load without running anything they name."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from masn.unpickle import UnsafePickleError, load_pickle, load_torchscript_tensors
from masn.weights.formats.registry import convert
from tests.weights.published import CLIP_TINY, write_openai_clip, write_py2_pickle

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:FutureWarning")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["detectron2_pkl", "caffe2_i3d"])
def test_pickle_that_runs_code_is_refused(tmp_path, fmt) -> None:
    marker = tmp_path / "owned"
    payload = {"conv1_w": _RunsCode(marker)}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": payload, "blobs": payload}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load .*evil\.pkl.*system"):
        convert(fmt, path)
    assert not marker.exists()


def test_safe_pickle_reads_python2_arrays_and_refuses_other_globals(tmp_path) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "py2.pkl"
    write_py2_pickle(path, {"blobs": {"w": array, "model_iter": 7}})
    loaded = load_pickle(path)["blobs"]
    assert np.array_equal(loaded["w"], array) and loaded["model_iter"] == 7

    evil = b"\x80\x02c__builtin__\neval\nX\x06\x00\x00\x001 + 1\x85R."
    (tmp_path / "eval.pkl").write_bytes(evil)
    with pytest.raises(UnsafePickleError, match=r"__builtin__\.eval"):
        load_pickle(tmp_path / "eval.pkl")
    codec = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R."
    (tmp_path / "codec.pkl").write_bytes(codec)
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_pickle(tmp_path / "codec.pkl")


class _Holder(nn.Module):
    """A scripted module with typed containers and a buffer sharing another's storage."""

    def __init__(self):
        super().__init__()
        self.sizes = [1, 2, 3]
        self.names = {"a": 1}
        base = torch.arange(12.0).view(3, 4)
        self.register_buffer("base", base)
        self.register_buffer("row", base[1])
        self.scale = nn.Parameter(torch.full((2,), 0.5, dtype=torch.float64))
        self.inner = nn.Linear(4, 2).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half()) + self.sizes[0] + self.names["a"]


def test_torchscript_tensors_are_read_as_torch_reads_them(tmp_path) -> None:
    tiny = tmp_path / "tiny.pt"
    written = write_openai_clip(tiny, CLIP_TINY)
    holder = tmp_path / "holder.pt"
    torch.jit.save(torch.jit.script(_Holder()), str(holder))
    for path in (tiny, holder):
        expected = torch.jit.load(str(path), map_location="cpu").state_dict()
        tensors = load_torchscript_tensors(path)
        assert set(expected) <= set(tensors)
        for key, value in expected.items():
            assert tensors[key].dtype == value.dtype and torch.equal(tensors[key], value), key
            assert not tensors[key].requires_grad
    assert set(written) < set(load_torchscript_tensors(tiny))  # + the text tower's causal mask
    tensors = load_torchscript_tensors(holder)
    assert (
        tensors["row"].untyped_storage().data_ptr() == tensors["base"].untyped_storage().data_ptr()
    )


def test_torchscript_code_is_never_read(tmp_path) -> None:
    path = tmp_path / "holder.pt"
    torch.jit.save(torch.jit.script(_Holder()), str(path))
    marker = tmp_path / "owned"
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(tampered, "w") as new:
        for info in old.infolist():
            code = info.filename.startswith("holder/code/") and info.filename.endswith(".py")
            text = f"import os\nos.system('touch {marker}')\n".encode()
            new.writestr(info, text if code else old.read(info))
    with pytest.raises(RuntimeError):  # torch compiles the archive's code
        torch.jit.load(str(tampered))
    assert torch.equal(load_torchscript_tensors(tampered)["base"], torch.arange(12.0).view(3, 4))
    assert not marker.exists()
