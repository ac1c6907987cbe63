"""Read-only HDF5 files opened lazily in each process: the handle of the feature readers.

HDF5 handles must not cross a fork, and DataLoader workers get their reader by fork or pickle.
``ProcessLocalFiles`` therefore opens its files on first access in each process (leaving a
handle inherited through fork to the parent), pickles without them, and remembers which files
it first read: a file replaced on disk meanwhile (by a consolidation, a merge or a new export)
is refused rather than mixed with the old one. ``FeatureStore`` (one store file) and
``OfficialFeatures`` (the four official files) both read through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import h5py

View = TypeVar("View")


class FilesReplaced(RuntimeError):
    """Files that were replaced on disk after this reader first read them (by name)."""

    def __init__(self, names: list[str]):
        super().__init__(f"replaced after they were first read: {', '.join(names)}")
        self.names = names


def file_identity(file: h5py.File) -> tuple[int, int]:
    """(device, inode) of an open HDF5 file: what stays the same until it is replaced."""
    status = os.fstat(file.id.get_vfd_handle())
    return status.st_dev, status.st_ino


class ProcessLocalFiles(Generic[View]):
    """Named read-only HDF5 files, opened on first access in each process.

    ``view`` turns the open files into what the reader works with (a group, a table per field)
    and is computed once per process. ``opener`` opens one path (module-level, so it pickles)
    and raises the reader's own errors for files it cannot read.
    """

    def __init__(self, paths: Mapping[str, Path], opener: Callable[[Path], h5py.File]):
        self.paths = dict(paths)
        self.opener = opener
        self._files: dict[str, h5py.File] | None = None
        self._view: Any = None
        self._pid: int | None = None
        self._identity: dict[str, tuple[int, int]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": None, "_view": None, "_pid": None}

    @property
    def is_open(self) -> bool:
        """Whether this process holds open handles."""
        return self._files is not None and self._pid == os.getpid()

    def get(self, view: Callable[[dict[str, h5py.File]], View]) -> View:
        """``view`` of the files open in this process (opened, checked and viewed once).

        Raises ``FilesReplaced`` when a file is not the one this object first read.
        """
        if self._files is None or self._pid != os.getpid():
            # Handles inherited through fork belong to the parent: leave them alone.
            files: dict[str, h5py.File] = {}
            try:
                for name, path in self.paths.items():
                    files[name] = self.opener(path)
                identity = {name: file_identity(file) for name, file in files.items()}
                if self._identity not in (None, identity):
                    changed = [name for name in files if self._identity[name] != identity[name]]
                    raise FilesReplaced(changed)
                viewed = view(files)
            except BaseException:
                for file in files.values():
                    file.close()
                raise
            self._files, self._view = files, viewed
            self._pid, self._identity = os.getpid(), identity
        return self._view

    def close(self) -> None:
        """Closes this process's handles (a later ``get`` reopens them)."""
        if self.is_open:
            for file in self._files.values():
                file.close()
        self._files = self._view = None
