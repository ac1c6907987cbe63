"""``FeatureStore``: read-only access to a consolidated feature store, from any process."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import h5py

from masn.errors import MissingInput, UnknownName
from masn.extract.store.handle import FilesReplaced, ProcessLocalFiles
from masn.extract.store.schema import FIELDS, VideoRecord, escape_key, read_metadata
from masn.extract.store.store_file import (
    DamagedStore,
    open_store_file,
    read_provenance,
    videos_of,
)


class FeatureStore:
    """Read-only access to a consolidated store; usable from DataLoader worker processes.

    The HDF5 file is opened on first access in each process (HDF5 handles must not cross a
    fork) and the object pickles without it. Once a process has read the file, a store that
    was replaced on disk meanwhile is refused rather than mixed with the old one
    (``handle.ProcessLocalFiles``).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.exists():
            parts = self.path.with_name(self.path.name + ".parts")
            hint = (
                f"; {parts} holds unconsolidated videos: rerun the extraction to consolidate them"
                if parts.is_dir()
                else ""
            )
            raise MissingInput(f"no feature store at {self.path}{hint}")
        self.provenance, self.feature_dtype = read_provenance(self.path)
        self._hdf5: ProcessLocalFiles[h5py.Group] = ProcessLocalFiles(
            {"store": self.path}, open_store_file
        )
        self._keys: list[str] | None = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.videos_group())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            name = escape_key(key)
        except ValueError:
            return False
        return name in self.videos_group()

    def keys(self) -> list[str]:
        """The original video keys, in storage order."""
        if self._keys is None:
            self._keys = [unquote(name) for name in self.videos_group()]
        return list(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def num_frames(self, key: str) -> int:
        """T, the number of sampled frames of ``key`` (read from the shape, no data read)."""
        return int(self._video(key)["appearance"].shape[0])

    def read(self, key: str, fields: Iterable[str] | None = None) -> VideoRecord:
        """The video's record; only ``fields`` are read (all when None), absent ones are None."""
        wanted = FIELDS if fields is None else tuple(fields)
        unknown = sorted(set(wanted) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; choose from {list(FIELDS)}")
        group = self._video(key)
        try:
            arrays = {
                name: dataset[()] for name in wanted if (dataset := group.get(name)) is not None
            }
            metadata = read_metadata(group.attrs)
        except (OSError, KeyError) as error:
            raise DamagedStore(self.path, f"cannot read video {key!r}: {error}") from None
        return VideoRecord(key=key, **arrays, **metadata)

    def videos_group(self) -> h5py.Group:
        """The store's open ``videos`` group in this process (one group per escaped key), for
        copying whole videos (``merge.merge_stores``)."""
        try:
            return self._hdf5.get(lambda files: videos_of(files["store"], self.path))
        except FilesReplaced:
            raise RuntimeError(
                f"{self.path} was replaced (by a consolidation or merge) after it was first "
                "read; create a new FeatureStore to read the new file"
            ) from None

    def close(self) -> None:
        """Closes this process's handle (a later access reopens it)."""
        self._hdf5.close()

    def _video(self, key: str) -> h5py.Group:
        try:
            return self.videos_group()[escape_key(key)]
        except (KeyError, ValueError):
            close = difflib.get_close_matches(str(key), self.keys(), n=3)
            hint = f"; close keys: {', '.join(map(repr, close))}" if close else ""
            raise UnknownName(f"no video {key!r} in {self.path}{hint}") from None
