"""The lazy per-process HDF5 handle behind both feature readers."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import pytest

from masn.extract.store.handle import FilesReplaced, ProcessLocalFiles


def _open(path: Path) -> h5py.File:
    return h5py.File(path, "r", locking=False)


def _write(path: Path, value: int) -> None:
    with h5py.File(path, "w") as file:
        file["x"] = [value]


def _first_values(files: dict[str, h5py.File]) -> dict[str, int]:
    return {name: int(file["x"][0]) for name, file in files.items()}


def test_opens_on_first_access_and_views_once(tmp_path):
    for name, value in (("a", 1), ("b", 2)):
        _write(tmp_path / f"{name}.h5", value)
    views = []
    handle = ProcessLocalFiles({"a": tmp_path / "a.h5", "b": tmp_path / "b.h5"}, _open)
    assert not handle.is_open

    def view(files):
        views.append(1)
        return _first_values(files)

    assert handle.get(view) == {"a": 1, "b": 2} and handle.is_open
    assert handle.get(view) == {"a": 1, "b": 2} and len(views) == 1
    handle.close()
    assert not handle.is_open
    assert handle.get(view) == {"a": 1, "b": 2} and len(views) == 2  # reopened


def test_pickles_without_handles_and_refuses_replaced_files(tmp_path):
    for name, value in (("a", 1), ("b", 2)):
        _write(tmp_path / f"{name}.h5", value)
    handle = ProcessLocalFiles({"a": tmp_path / "a.h5", "b": tmp_path / "b.h5"}, _open)
    handle.get(_first_values)
    copy = pickle.loads(pickle.dumps(handle))
    assert not copy.is_open and copy.get(_first_values) == {"a": 1, "b": 2}
    stale = pickle.dumps(handle)
    _write(tmp_path / "new.h5", 3)
    os.replace(tmp_path / "new.h5", tmp_path / "b.h5")
    with pytest.raises(FilesReplaced) as caught:
        pickle.loads(stale).get(_first_values)
    assert caught.value.names == ["b"]
    assert handle.get(_first_values) == {"a": 1, "b": 2}  # this process keeps its open files
