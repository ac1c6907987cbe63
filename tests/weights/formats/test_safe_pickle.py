"""Legacy weight pickles load without running anything they name."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from masn.weights.formats.registry import convert
from masn.weights.formats.safe_pickle import UnsafePickleError, load_pickle
from tests.weights.published import write_py2_pickle


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
