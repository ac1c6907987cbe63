"""``FeatureStore``: read-only access to a consolidated feature store, from any process."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.store.handle import FilesReplaced, ProcessLocalFiles
from masn.extract.store.schema import (
    FIELDS,
    FIXED_DTYPES,
    REQUIRED_FIELDS,
    VideoRecord,
    dataset_layout,
    escape_key,
    layout_problems,
    read_metadata,
)
from masn.extract.store.store_file import (
    DAMAGED_FIX,
    NON_FINITE,
    DamagedStore,
    DamagedVideo,
    frame_counts,
    open_store_file,
    read_provenance,
    stream_widths,
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

    @property
    def widths(self) -> dict[str, int]:
        """The width of each feature field (``schema.FEATURE_FIELDS``), the same for every video:
        as the store records it, or (stores written before it did) as its first video has it."""
        videos = self.videos_group()
        if "widths" in videos.file.attrs:
            return json.loads(videos.file.attrs["widths"])
        if not len(videos):
            raise InvalidInput(f"{self.path} holds no videos")
        return stream_widths(videos)

    def frame_counts(self) -> Iterator[tuple[str, int | None]]:
        """(key, sampled frames) of every video, in storage order, streamed: from the store's
        index in one read (``store_file.frame_counts``; None: a damaged video)."""
        return frame_counts(self.videos_group().file, self.path)

    def num_frames(self, key: str) -> int:
        """T, the number of sampled frames of ``key`` (read from the shape, no data read)."""
        return int(self._video(key)["appearance"].shape[0])

    def read(self, key: str, fields: Iterable[str] | None = None) -> VideoRecord:
        """The video's record; only ``fields`` are read (all when None), absent optional ones are
        None. A required field that is missing, or values that are NaN or infinite, are a
        ``DamagedVideo`` naming the video and the field."""
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
        for name in wanted:
            array = arrays.get(name)
            if array is None and name in REQUIRED_FIELDS:
                raise DamagedVideo(f"video {key!r} in {self.path}: {name} is missing")
            if array is not None and array.dtype.kind == "f" and not np.isfinite(array).all():
                problem = f"video {key!r} in {self.path}: {name} {NON_FINITE}"
                raise DamagedVideo(f"{problem}; {DAMAGED_FIX}", problem)
        return VideoRecord(key=key, **arrays, **metadata, provenance=self.provenance)

    def damaged(self, keys: Iterable[str]) -> dict[str, str]:
        """The videos among ``keys`` whose datasets do not have the store's layout (a dataset
        missing, another rank or dtype, another width than the store's), each with what is wrong
        (``schema.layout_problems``). Reads the HDF5 headers only, about a millisecond per
        video: NaN values are found as a video is read."""
        layouts = {}
        for key in keys:
            group = self._video(key)
            layouts[key] = {field: dataset_layout(group.get(field)) for field in REQUIRED_FIELDS}
        feature = np.dtype(self.feature_dtype)
        dtypes = {field: FIXED_DTYPES.get(field, feature) for field in REQUIRED_FIELDS}
        return layout_problems(layouts, dtypes, self.widths if layouts else None)

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
