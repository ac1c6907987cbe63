"""The official MASN four-file feature layout: where each of our fields lives in the files each
dataset names (:mod:`masn.datasets`), and the checks of the files' contents (docs/official-masn.md,
"The four-file feature layout").

The official loaders open four HDF5 files per dataset, each keyed by the official video key
(TGIF: the integer ``key`` column of the TGIF-QA csv; MSVD ``vidN``; MSRVTT ``videoN``):
ResNet appearance (T, 2048), I3D motion (T, 2048), the detector file with groups
``image_features`` (T, 10, 2048) and ``spatial_features`` (T, 10, 6), and I3D RoIAlign motion
objects (T, 10, 2048), all float32. ``official_reader`` reads them in place;
``official_transfer`` exports our store to them and imports them into a store.

Damaged inputs are user errors (``InvalidInput``) naming the file and, where it applies, the
dataset inside it: a file HDF5 cannot open (empty, text, truncated), a missing group or one that
is a dataset, a video entry that is a group, an array of the wrong rank, width or type, data
that cannot be read or that holds NaN or infinite values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from masn.datasets import dataset_names, get_dataset
from masn.datasets.spec import OfficialFiles
from masn.errors import InvalidInput, MissingInput
from masn.extract.store.schema import SHAPES

OFFICIAL_FILES: dict[str, OfficialFiles] = {
    name: files for name in dataset_names() if (files := get_dataset(name).official) is not None
}
OFFICIAL_KEY = {name: re.compile(files.key_pattern) for name, files in OFFICIAL_FILES.items()}
# The attributes of OfficialFiles, one per file.
FILE_ROLES = ("appearance", "motion", "objects", "motion_objects")
# Where each of our fields lives: (file attribute of OfficialFiles, group inside it or "").
_SOURCES = {
    "appearance": ("appearance", ""),
    "motion": ("motion", ""),
    "appearance_objects": ("objects", "image_features"),
    "box_geometry": ("objects", "spatial_features"),
    "motion_objects": ("motion_objects", ""),
}
# How many example keys a message names.
EXAMPLES_SHOWN = 5
_AGAIN = "download it again or re-export it (masn features export-official)"


def official_files(dataset: str) -> OfficialFiles:
    """File names for ``dataset`` (tgif, msvd or msrvtt)."""
    if dataset not in OFFICIAL_FILES:
        raise InvalidInput(f"unknown dataset {dataset!r}; choose from {sorted(OFFICIAL_FILES)}")
    return OFFICIAL_FILES[dataset]


def check_present(in_dir: Path, files: OfficialFiles) -> None:
    """Raises ``MissingInput`` naming the official files ``in_dir`` lacks."""
    missing = [name for name in files.names() if not (in_dir / name).is_file()]
    if missing:
        hint = (
            f" ({files.motion_objects_hint})"
            if files.motion_objects in missing and files.motion_objects_hint
            else ""
        )
        raise MissingInput(f"{in_dir} lacks {', '.join(missing)}{hint}")


def missing_report(
    everywhere: Mapping[str, set[str]], keys: list[str], files: OfficialFiles
) -> list[str]:
    """One line per field table that lacks some of ``keys``: count, file, examples."""
    problems = []
    for field, present in everywhere.items():
        absent = [key for key in keys if key not in present]
        if absent:
            problems.append(
                f"{len(absent)} missing from {field_location(field, files)} "
                f"(e.g. {', '.join(absent[:EXAMPLES_SHOWN])})"
            )
    return problems


def field_location(field: str, files: OfficialFiles) -> str:
    """The file (and group) holding ``field``, e.g. ``tgif_btup_f_obj10.hdf5/image_features``."""
    file, group = _SOURCES[field]
    return getattr(files, file) + (f"/{group}" if group else "")


def open_official(path: Path) -> h5py.File:
    """``path`` opened for reading; a file HDF5 cannot open is reported as the user's to fix."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as error:  # h5py's "file signature not found", "truncated file", ...
        raise InvalidInput(
            f"{path} is not a readable HDF5 file ({_reason(error)}); {_AGAIN}"
        ) from None


def _reason(error: OSError) -> str:
    """HDF5's own words, on one line, without h5py's "Unable to synchronously ..." prefix."""
    text = " ".join(str(error).split())
    inner = re.search(r"\((.+)\)$", text)
    return inner.group(1) if inner else text


def field_tables(handles: Mapping[str, h5py.File]) -> dict[str, h5py.Group]:
    """Field -> the file or group holding one dataset per video (``handles``: file role ->
    open file); a group that is absent or is a dataset is an error naming the file."""
    tables = {}
    for field, (file, group) in _SOURCES.items():
        handle = handles[file]
        if not group:
            tables[field] = handle
            continue
        item = handle.get(group)
        if not isinstance(item, h5py.Group):
            found = "has no" if item is None else "has a dataset, not a group,"
            raise InvalidInput(
                f"{handle.filename} {found} {group!r} (the official objects file holds the "
                f"groups image_features and spatial_features); {_AGAIN}"
            )
        tables[field] = item
    return tables


def video_dataset(table: h5py.Group, key: str) -> h5py.Dataset:
    """The video's dataset in ``table``; anything else there is an error naming file and path."""
    item = table.get(key)
    if not isinstance(item, h5py.Dataset):
        found = "missing" if item is None else "a group, not a dataset"
        raise InvalidInput(
            f"{table.file.filename} dataset {table.name.rstrip('/')}/{key} is {found}; {_AGAIN}"
        )
    return item


def video_datasets(tables: Mapping[str, h5py.Group], key: str) -> dict[str, h5py.Dataset]:
    """Field -> the video's dataset, checked against the store's shapes: (T, A) appearance,
    (T, M) motion, (T, N, A) and (T, N, M) objects, (T, N, 6) boxes, numbers only. T is left to
    the callers (videos whose files disagree on T may be skipped)."""
    datasets = {field: video_dataset(table, key) for field, table in tables.items()}
    sizes: dict[str, tuple[int, str]] = {}
    for field, dataset in datasets.items():
        pattern, shape = SHAPES[field], dataset.shape
        fits = len(shape) == len(pattern) and dataset.dtype.kind in "iuf" and 0 not in shape
        if fits and isinstance(pattern[-1], int) and shape[-1] != pattern[-1]:
            fits = False
        if not fits:
            raise InvalidInput(
                f"{_name(dataset)} holds {dataset.dtype} {shape}; expected numbers shaped "
                f"({', '.join(map(str, pattern))}) (official: appearance and motion T x 2048, "
                f"objects T x 10 x 2048, boxes T x 10 x 6); {_AGAIN}"
            )
        for symbol, size in zip(pattern[1:], shape[1:], strict=True):
            if isinstance(symbol, int):
                continue
            expected, first = sizes.setdefault(symbol, (size, field))
            if size != expected:
                other = datasets[first]
                raise InvalidInput(
                    f"{_name(dataset)} {shape} and {_name(other)} {other.shape} disagree on "
                    f"{'the number of objects' if symbol == 'N' else 'the feature width'}; "
                    f"{_AGAIN}"
                )
    return datasets


def _name(dataset: h5py.Dataset) -> str:
    """File and dataset, e.g. ``official/tgif_btup_f_obj10.hdf5 dataset /image_features/17``."""
    return f"{dataset.file.filename} dataset {dataset.name}"


def read_dataset(dataset: h5py.Dataset, key: str) -> np.ndarray:
    """The dataset's array; data HDF5 cannot read, and NaN or infinite values (which would
    only show later as a training loss that is not finite), mean a damaged file."""
    try:
        array = dataset[()]
    except OSError as error:
        raise InvalidInput(
            f"{_name(dataset)} (video {key!r}) cannot be read ({_reason(error)}); {_AGAIN}"
        ) from None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(
            f"{_name(dataset)} (video {key!r}) holds NaN or infinite values; {_AGAIN}"
        )
    return array
