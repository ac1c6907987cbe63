"""Reading the official MASN four-file layout in place: ``OfficialFeatures`` has the reading
interface of ``FeatureStore``, and ``open_features`` opens either from a path."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.store.handle import FilesReplaced, ProcessLocalFiles
from masn.extract.store.official_layout import (
    FILE_ROLES,
    OFFICIAL_FILES,
    check_present,
    field_location,
    field_tables,
    missing_report,
    official_files,
    open_official,
    read_dataset,
    video_dataset,
    video_datasets,
)
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import (
    FEATURE_FIELDS,
    FIELDS,
    VideoRecord,
    dataset_layout,
    layout_problems,
)

log = logging.getLogger(__name__)


class OfficialFeatures:
    """Reads the four official files of one dataset in place, like a ``FeatureStore``.

    Only videos present in all four files (and in ``spatial_features``) are listed. The files
    are opened on first access in each process (HDF5 handles must not cross a fork) and the
    object pickles without them, so it works in DataLoader worker processes
    (``handle.ProcessLocalFiles``). Records carry the five MASN fields only: the official files
    have no pixel boxes, labels, scores or times.
    """

    def __init__(self, folder: str | os.PathLike[str], dataset: str):
        self.path = Path(folder)
        self.dataset = dataset
        self.files = official_files(dataset)
        if not self.path.is_dir():
            raise MissingInput(
                f"no folder {self.path}; expected one holding the official {dataset} files "
                f"{', '.join(self.files.names())}"
            )
        check_present(self.path, self.files)
        with open_official(self.path / self.files.appearance) as file:
            first = next(iter(file), None)
            item = file.get(first) if first is not None else None
            dtype = item.dtype.name if isinstance(item, h5py.Dataset) else "float32"
        self.feature_dtype: str = dtype
        paths = {role: self.path / getattr(self.files, role) for role in FILE_ROLES}
        self._hdf5: ProcessLocalFiles[dict[str, h5py.Group]] = ProcessLocalFiles(
            paths, open_official
        )
        self._keys: list[str] | None = None
        self._key_set: frozenset[str] = frozenset()

    def __enter__(self) -> OfficialFeatures:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OfficialFeatures({str(self.path)!r}, {self.dataset!r})"

    def keys(self) -> list[str]:
        """Keys of the videos in all four files, in the appearance file's order."""
        if self._keys is None:
            tables = self._open()
            everywhere = {field: set(table) for field, table in tables.items()}
            order = list(tables["appearance"])
            keys = [key for key in order if all(key in present for present in everywhere.values())]
            every = sorted(set().union(*everywhere.values()))
            if len(keys) < len(every):
                log.warning(
                    "%s: leaving out %d of %d videos not in all four official files: %s",
                    self.path,
                    len(every) - len(keys),
                    len(every),
                    "; ".join(missing_report(everywhere, every, self.files)),
                )
            self._keys, self._key_set = keys, frozenset(keys)
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if self._keys is None:
            self.keys()
        return key in self._key_set

    def __len__(self) -> int:
        if self._keys is None:
            self.keys()
        return len(self._key_set)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    @property
    def widths(self) -> dict[str, int]:
        """The width of each feature field, from the first video's shapes (no data read)."""
        tables = self._open()
        first = self.keys()[0]
        return {name: int(video_dataset(tables[name], first).shape[-1]) for name in FEATURE_FIELDS}

    def damaged(self, keys: Iterable[str]) -> dict[str, str]:
        """The videos among ``keys`` whose datasets a reader cannot use (another rank or width
        than the others', not numbers, T differing across the files), each with what is wrong
        (``schema.layout_problems``); from the HDF5 headers only."""
        tables = self._open()
        layouts = {
            key: {field: dataset_layout(table.get(key)) for field, table in tables.items()}
            for key in keys
        }
        return layout_problems(layouts, dict.fromkeys(tables), self.widths if layouts else None)

    def num_frames(self, key: str) -> int:
        """T, the number of sampled frames of ``key`` (from the appearance shape, no data read)."""
        self._check_key(key)
        return int(video_dataset(self._open()["appearance"], key).shape[0])

    def read(self, key: str, fields: Iterable[str] | None = None) -> VideoRecord:
        """The video's record; only ``fields`` are read (all when None), the others are None.

        Raises ValueError when the four files disagree on T for ``key``.
        """
        wanted = FIELDS if fields is None else tuple(fields)
        unknown = sorted(set(wanted) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; choose from {list(FIELDS)}")
        self._check_key(key)
        datasets = video_datasets(self._open(), key)
        lengths = {field: dataset.shape[0] for field, dataset in datasets.items()}
        if len(set(lengths.values())) > 1:
            found = ", ".join(
                f"{field_location(field, self.files)}: {n}" for field, n in lengths.items()
            )
            raise InvalidInput(
                f"video {key!r} has different numbers of frames T across the official files in "
                f"{self.path} ({found}); re-extract it or leave it out"
            )
        arrays = {
            field: read_dataset(datasets[field], key) for field in wanted if field in datasets
        }
        return VideoRecord(key=key, **arrays)

    def close(self) -> None:
        """Closes this process's handles (a later access reopens them)."""
        self._hdf5.close()

    def _open(self) -> dict[str, h5py.Group]:
        """Field -> its table (file or group), opened once per process."""
        try:
            return self._hdf5.get(field_tables)
        except FilesReplaced as error:
            changed = [getattr(self.files, role) for role in error.names]
            raise RuntimeError(
                f"{', '.join(changed)} in {self.path} was replaced after it was first "
                "read; create a new OfficialFeatures to read the new files"
            ) from None

    def _check_key(self, key: str) -> None:
        if key not in self:
            close = difflib.get_close_matches(str(key), self.keys(), n=3)
            hint = f"; close keys: {', '.join(map(repr, close))}" if close else ""
            raise UnknownName(
                f"no video {key!r} in all four official {self.dataset} files in {self.path}{hint}"
            )


def open_features(
    path: str | os.PathLike[str], dataset: str | None = None
) -> FeatureStore | OfficialFeatures:
    """A reader of ``path``: a ``FeatureStore`` for a file, ``OfficialFeatures`` for a folder.

    A folder's dataset is detected from the official file names it holds when ``dataset`` is
    None; ``dataset`` is ignored for a store file.
    """
    path = Path(path)
    if path.is_file():
        return FeatureStore(path)
    if path.is_dir():
        return OfficialFeatures(path, dataset or _detect_dataset(path))
    if path.with_name(path.name + ".parts").is_dir():
        return FeatureStore(path)  # raises, pointing at the unconsolidated parts
    raise MissingInput(
        f"no features at {path}: expected a feature store (.h5) written by `masn extract`, or a "
        f"folder holding the four official MASN files ({_expected_names()})"
    )


def _detect_dataset(folder: Path) -> str:
    """The dataset whose official files ``folder`` holds (all four, else any of them)."""
    present = {
        dataset: [name for name in files.names() if (folder / name).is_file()]
        for dataset, files in OFFICIAL_FILES.items()
    }
    complete = [dataset for dataset, names in present.items() if len(names) == len(FILE_ROLES)]
    partial = [dataset for dataset, names in present.items() if names]
    candidates = complete or partial
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MissingInput(
            f"{folder} holds no official MASN feature files; expected, per dataset: "
            f"{_expected_names()}"
        )
    raise InvalidInput(
        f"{folder} holds official files of several datasets ({', '.join(candidates)}); pass "
        f"the dataset explicitly (expected, per dataset: {_expected_names()})"
    )


def _expected_names() -> str:
    return "; ".join(
        f"{dataset}: {', '.join(files.names())}" for dataset, files in OFFICIAL_FILES.items()
    )
