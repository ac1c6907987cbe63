"""The store's HDF5 file: creating one (root attributes, atomic replacement, adding videos) and
opening one for reading (format and version checks; a damaged file is a ``DamagedStore``).

Root attributes: ``format`` ("masn-features"), ``version`` (1), ``config`` (JSON of the
extraction configuration), ``weights`` (JSON: role -> the weights' source and sha256, "random"
or "unknown"), ``created`` (ISO time), ``feature_dtype``, ``widths`` (JSON: each feature field's
width, the same for every video; stores written before it have none) and ``settings`` (YAML of
the command settings that wrote the store last, when known). The group ``videos`` holds one
group per video, named by its escaped key (``schema.escape_key``), laid out as ``schema`` says;
the group ``index`` lists them: ``names`` (escaped keys) and ``frames`` (each one's sampled
frames), so that a store of 100,000 videos lists them in one read (stores written before it
have none).

HDF5 files are not crash-safe while open for writing, so a store file is only ever written
whole, under a temporary name, and then renamed into place (``atomic_hdf5``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np

from masn.atomic import replacing
from masn.errors import InvalidInput, MissingInput
from masn.extract.store.schema import (
    FEATURE_FIELDS,
    FeatureDtype,
    Provenance,
    VideoRecord,
    check_dtype,
    dataset_layout,
    escape_key,
    prepare_arrays,
    record_metadata,
    write_metadata,
)

FORMAT = "masn-features"
VERSION = 1
INDEX = "index"


class DamagedStore(InvalidInput):
    """A file where a feature store should be that cannot be read as one."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(
            f"{path} is damaged or not an HDF5 file ({problem}); rerun `masn extract` with "
            f"--out {path} to rebuild it (the damaged file is moved aside), or use another store"
        )


class DamagedVideo(InvalidInput):
    """One video of a store (or of the official files) whose datasets cannot be used: a missing
    dataset, another shape or dtype than the others', or NaN and infinite values. ``problem``:
    what is wrong, without the advice that ends the message."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


NON_FINITE = (
    "holds NaN or infinite values, so the store was damaged after it was written (masn extract "
    "never writes them)"
)
DAMAGED_FIX = (
    "leave the video's questions out of the annotations, or extract the videos into a new store"
)


def init_store(file: h5py.File, provenance: Provenance, dtype: FeatureDtype) -> h5py.Group:
    """Writes the root attributes of a new store into ``file``; returns its ``videos`` group."""
    check_dtype(dtype)
    file.attrs.update(
        format=FORMAT,
        version=VERSION,
        config=json.dumps(provenance.config, sort_keys=True),
        weights=json.dumps(provenance.weights, sort_keys=True),
        created=provenance.created,
        feature_dtype=dtype,
    )
    if provenance.settings:
        file.attrs["settings"] = provenance.settings
    return file.create_group("videos")


@contextlib.contextmanager
def new_store(
    path: str | os.PathLike[str],
    provenance: Provenance,
    dtype: FeatureDtype,
    needed: int | None = None,
) -> Iterator[h5py.Group]:
    """A new store file that replaces ``path`` once complete (``atomic_hdf5``; ``needed``: its
    expected size, for a full disk's message): yields its ``videos`` group to fill, then records
    the feature widths and the index of its videos."""
    with atomic_hdf5(path, needed) as file:
        videos = init_store(file, provenance, dtype)
        yield videos
        if len(videos):
            file.attrs["widths"] = json.dumps(stream_widths(videos))
        names = list(videos)
        index = file.create_group(INDEX)
        index.create_dataset("names", data=names, dtype=h5py.string_dtype())
        frames = [videos[name]["appearance"].shape[0] for name in names]
        index.create_dataset("frames", data=np.asarray(frames, dtype=np.int64))


def frame_counts(file: h5py.File, path: Path) -> Iterator[tuple[str, int | None]]:
    """(key, sampled frames) of every video of the open store ``file`` (at ``path``), in storage
    order: from its index in one read, or (a store written before it had one) video by video,
    from the dataset headers (None: a damaged video without its appearance features)."""
    index = file.get(INDEX)
    if index is not None:
        names, frames = index["names"].asstr()[()], index["frames"][()]
        for name, count in zip(names, frames, strict=True):
            yield unquote(name), int(count)
        return
    videos = videos_of(file, path)
    for name in videos:
        found = dataset_layout(videos[name].get("appearance"))
        yield unquote(name), None if found is None else found[0][0]


def stream_widths(videos: h5py.Group) -> dict[str, int]:
    """The width of each feature field, from the shapes of the first video (no data read)."""
    first = videos[next(iter(videos))]
    return {name: int(first[name].shape[-1]) for name in FEATURE_FIELDS}


def add_video(videos: h5py.Group, record: VideoRecord, dtype: FeatureDtype) -> None:
    """Validates ``record`` and writes it into a store's open ``videos`` group."""
    arrays = prepare_arrays(record, dtype)
    group = videos.create_group(escape_key(record.key))
    for name, array in arrays.items():
        group.create_dataset(name, data=array)
    write_metadata(group, record.key, record_metadata(record))


@contextlib.contextmanager
def atomic_hdf5(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[h5py.File]:
    """A new HDF5 file that replaces ``path`` only once complete and on disk
    (``masn.atomic.replacing``: temporary name, fsync, rename; leftovers of killed runs go; a full
    disk names ``path`` and ``needed``, its expected size in bytes)."""
    with replacing(path, needed) as temporary, h5py.File(temporary, "w", locking=False) as file:
        yield file


def open_store_file(path: Path) -> h5py.File:
    """``path`` opened read-only; a file HDF5 cannot read is a ``DamagedStore`` error."""
    if path.is_dir():
        raise InvalidInput(f"{path} is a folder, not a feature store file")
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise MissingInput(f"no feature store at {path}") from None
    except PermissionError:
        raise InvalidInput(f"cannot read {path}: permission denied") from None
    except OSError as error:
        problem = str(error).split("(", 1)[-1].rstrip(")") if "(" in str(error) else str(error)
        raise DamagedStore(path, problem) from None


def read_provenance(path: Path) -> tuple[Provenance, str]:
    """The provenance and feature dtype of the store at ``path``."""
    with open_store_file(path) as file:
        return provenance_of(file, path)


def provenance_of(file: h5py.File, path: Path) -> tuple[Provenance, str]:
    """The provenance and feature dtype of the open store ``file`` (at ``path``), after checking
    that it is a MASN store of a version this code reads."""
    attrs = file.attrs
    if attrs.get("format") != FORMAT:
        raise InvalidInput(
            f"{path} is not a MASN feature store (no format={FORMAT!r} attribute); for the "
            "official MASN feature files use `masn features import-official` "
            "(masn.extract.store.official_transfer.import_official)"
        )
    try:
        version = int(attrs["version"])
        config, weights = json.loads(attrs["config"]), json.loads(attrs["weights"])
        created, dtype = str(attrs["created"]), str(attrs["feature_dtype"])
    except (KeyError, ValueError, TypeError) as error:
        raise DamagedStore(path, f"unreadable store attributes: {error}") from None
    if version > VERSION:
        raise InvalidInput(
            f"{path} has store version {version}, newer than this code reads "
            f"({VERSION}); update the masn package"
        )
    return Provenance.stored(config, weights, created, str(attrs.get("settings", ""))), dtype


def videos_of(file: h5py.File, path: Path) -> h5py.Group:
    """The ``videos`` group of the open store ``file`` (at ``path``)."""
    try:
        return file["videos"]
    except (KeyError, OSError) as error:
        raise DamagedStore(path, f"no readable videos group: {error}") from None


def store_keys(path: Path) -> list[str]:
    """The keys of the store at ``path`` (none if absent), after checking its provenance."""
    if not path.exists():
        return []
    with open_store_file(path) as file:
        provenance_of(file, path)
        try:
            return [unquote(name) for name in videos_of(file, path)]
        except OSError as error:
            raise DamagedStore(path, f"unreadable list of videos: {error}") from None
