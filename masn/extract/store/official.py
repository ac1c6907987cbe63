"""The official MASN four-file feature layout (masn_reference §2.1): export and import.

The official loaders open four HDF5 files per dataset, each keyed by the official video key
(TGIF: the integer ``key`` column of the TGIF-QA csv; MSVD ``vidN``; MSRVTT ``videoN``):
ResNet appearance (T, 2048), I3D motion (T, 2048), the detector file with groups
``image_features`` (T, 10, 2048) and ``spatial_features`` (T, 10, 6), and I3D RoIAlign motion
objects (T, 10, 2048), all float32. Exporting hands our features to the official code;
importing lets users train on the authors' released features, and ``OfficialFeatures`` reads
them in place with the reading interface of ``FeatureStore`` (``open_features`` opens either).

Damaged inputs are user errors (``InvalidInput``) naming the file and, where it applies, the
dataset inside it: a file HDF5 cannot open (empty, text, truncated), a missing group or one that
is a dataset, a video entry that is a group, an array of the wrong rank, width or type, data
that cannot be read. Key-map files must be UTF-8 text; a bad byte is reported with its line.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from masn.errors import InvalidInput, MissingInput, UnknownName
from masn.extract.store.store import (
    FIELDS,
    REQUIRED_FIELDS,
    SHAPES,
    FeatureDtype,
    FeatureStore,
    Provenance,
    VideoRecord,
    add_video,
    atomic_hdf5,
    init_store,
)

log = logging.getLogger(__name__)

Dataset = Literal["tgif", "msvd", "msrvtt"]


@dataclass(frozen=True)
class OfficialFiles:
    """The four file names the official loaders open for one dataset."""

    appearance: str
    motion: str
    objects: str
    motion_objects: str

    def names(self) -> tuple[str, str, str, str]:
        """The four names in the order appearance, motion, objects, motion objects."""
        return (self.appearance, self.motion, self.objects, self.motion_objects)


OFFICIAL_FILES: dict[str, OfficialFiles] = {
    "tgif": OfficialFiles(
        "res152_avgpool.hdf5",
        "tgif_i3d_hw7_perclip_avgpool.hdf5",
        "tgif_btup_f_obj10.hdf5",
        "tgif_i3d_roialign_hw7_perclip_avgpool_obj10.hdf5",
    ),
    **{
        name: OfficialFiles(
            f"{name}_res152_avgpool.hdf5",
            f"{name}_i3d_avgpool_perclip.hdf5",
            f"{name}_btup_f_obj10.hdf5",
            f"{name}_i3d_roialign_perclip_obj10.hdf5",
        )
        for name in ("msvd", "msrvtt")
    },
}
OFFICIAL_KEY = {
    "tgif": re.compile(r"\d+"),
    "msvd": re.compile(r"vid\d+"),
    "msrvtt": re.compile(r"video\d+"),
}
_KEY_HINT = {
    "tgif": "the integer `key` column of the TGIF-QA csv files; pass key_map (gif_name -> key)",
    "msvd": "'vid' + video id; pass key_map to rename",
    "msrvtt": "'video' + video id; pass key_map to rename",
}
# Where each of our fields lives: (file attribute of OfficialFiles, group inside it or "").
_SOURCES = {
    "appearance": ("appearance", ""),
    "motion": ("motion", ""),
    "appearance_objects": ("objects", "image_features"),
    "box_geometry": ("objects", "spatial_features"),
    "motion_objects": ("motion_objects", ""),
}
_EXAMPLES = 5
_FILE_ATTRS = ("appearance", "motion", "objects", "motion_objects")
_AGAIN = "download it again or re-export it (masn features export-official)"


def official_files(dataset: str) -> OfficialFiles:
    """File names for ``dataset`` (tgif, msvd or msrvtt)."""
    if dataset not in OFFICIAL_FILES:
        raise InvalidInput(f"unknown dataset {dataset!r}; choose from {sorted(OFFICIAL_FILES)}")
    return OFFICIAL_FILES[dataset]


def export_official(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    dataset: Dataset,
    key_map: Mapping[str, str] | None = None,
) -> list[Path]:
    """Writes the store's features as the four official files in ``out_dir``; returns them.

    Video keys are renamed through ``key_map`` (our key -> official key) when given; videos it
    does not name are left out with a warning. Every file is replaced atomically.
    """
    files = official_files(dataset)
    out_dir = Path(out_dir)
    with FeatureStore(store_path) as store:
        names = _official_names(store.keys(), dataset, key_map)
        paths = [out_dir / name for name in files.names()]
        with contextlib.ExitStack() as stack:
            appearance, motion, objects, motion_objects = (
                stack.enter_context(atomic_hdf5(path)) for path in paths
            )
            targets = {
                "appearance": appearance,
                "motion": motion,
                "appearance_objects": objects.create_group("image_features"),
                "box_geometry": objects.create_group("spatial_features"),
                "motion_objects": motion_objects,
            }
            for key, official in names.items():
                record = store.read(key, fields=REQUIRED_FIELDS)
                for field, target in targets.items():
                    target.create_dataset(official, data=getattr(record, field).astype(np.float32))
    log.info("exported %d videos to the official %s layout in %s", len(names), dataset, out_dir)
    return paths


def _official_names(
    keys: list[str], dataset: str, key_map: Mapping[str, str] | None
) -> dict[str, str]:
    """Our key -> official key, checked against the dataset's official key pattern."""
    if key_map is None:
        names = {key: key for key in keys}
    else:
        names = {key: str(key_map[key]) for key in keys if key in key_map}
        _warn_skipped([key for key in keys if key not in key_map], "have no entry in key_map")
    invalid = [name for name in names.values() if not OFFICIAL_KEY[dataset].fullmatch(name)]
    if invalid:
        raise InvalidInput(
            f"{len(invalid)} video key(s) are not official {dataset} keys (e.g. "
            f"{', '.join(map(repr, invalid[:_EXAMPLES]))}): official keys are {_KEY_HINT[dataset]}"
        )
    if len(set(names.values())) != len(names):
        raise InvalidInput("key_map gives several videos the same official key")
    return names


def import_official(
    in_dir: str | os.PathLike[str],
    dataset: Dataset,
    out_path: str | os.PathLike[str],
    key_map: Mapping[str, str] | None = None,
    skip_incomplete: bool = False,
    dtype: FeatureDtype = "float16",
) -> Path:
    """Builds a store at ``out_path`` from the four official files in ``in_dir``; returns it.

    Videos missing from some files or whose files disagree on T are an error listing them;
    with ``skip_incomplete`` they are left out with a warning instead. With ``key_map`` (our
    key -> official key, as for ``export_official``) videos are stored under our keys and
    official videos it does not name are left out. The store has no pixel boxes, labels or
    scores, and its provenance is the official release with unknown weights.
    """
    files = official_files(dataset)
    in_dir = Path(in_dir)
    _check_present(in_dir, dataset, files)
    ours = _our_keys(key_map)
    with contextlib.ExitStack() as stack:
        opened = {
            name: stack.enter_context(_open_hdf5(in_dir / getattr(files, name)))
            for name in _FILE_ATTRS
        }
        tables = _tables(opened)
        complete = _complete_keys(tables, files, skip_incomplete)
        if ours is not None:
            _warn_skipped([key for key in complete if key not in ours], "have no entry in key_map")
            complete = [key for key in complete if key in ours]
        provenance = Provenance.new(
            {"source": "official MASN features", "dataset": dataset},
            {network: "unknown" for network in ("detector", "resnet152", "i3d")},
        )
        with atomic_hdf5(out_path) as out:
            videos = init_store(out, provenance, dtype)
            for official in complete:
                arrays = {
                    field: _read(_dataset(table, official), official)
                    for field, table in tables.items()
                }
                key = official if ours is None else ours[official]
                add_video(videos, VideoRecord(key=key, **arrays), dtype)
    log.info("imported %d official %s videos into %s", len(complete), dataset, out_path)
    return Path(out_path)


def _check_present(in_dir: Path, dataset: str, files: OfficialFiles) -> None:
    missing = [name for name in files.names() if not (in_dir / name).is_file()]
    if missing:
        hint = (
            " (the README / Google Drive name lacks '_obj10': rename the downloaded file)"
            if files.motion_objects in missing and dataset == "tgif"
            else ""
        )
        raise MissingInput(f"{in_dir} lacks {', '.join(missing)}{hint}")


def _our_keys(key_map: Mapping[str, str] | None) -> dict[str, str] | None:
    """Official key -> our key, from our key -> official key."""
    if key_map is None:
        return None
    inverse = {str(official): key for key, official in key_map.items()}
    if len(inverse) != len(key_map):
        raise InvalidInput("key_map gives several videos the same official key")
    return inverse


def _complete_keys(
    tables: Mapping[str, h5py.Group], files: OfficialFiles, skip_incomplete: bool
) -> list[str]:
    """Official keys present in all files with one T; reports (or raises on) the others."""
    everywhere = {field: set(table) for field, table in tables.items()}
    keys = sorted(set().union(*everywhere.values()))
    problems = _missing_report(everywhere, keys, files)
    complete = [key for key in keys if all(key in present for present in everywhere.values())]
    uneven = {}
    for key in complete:
        datasets = _video_datasets(tables, key)
        lengths = {field: dataset.shape[0] for field, dataset in datasets.items()}
        if len(set(lengths.values())) > 1:
            uneven[key] = lengths
    if uneven:
        examples = "; ".join(f"{key}: {lengths}" for key, lengths in list(uneven.items())[:3])
        problems.append(f"{len(uneven)} with different T across the files ({examples})")
    if problems:
        report = f"of {len(keys)} videos, " + "; ".join(problems)
        if not skip_incomplete:
            raise InvalidInput(f"{report}. Pass skip_incomplete=True to import only the others")
        log.warning("skipping incomplete videos: %s", report)
    return [key for key in complete if key not in uneven]


def _missing_report(
    everywhere: Mapping[str, set[str]], keys: list[str], files: OfficialFiles
) -> list[str]:
    """One line per field table that lacks some of ``keys``: count, file, examples."""
    problems = []
    for field, present in everywhere.items():
        absent = [key for key in keys if key not in present]
        if absent:
            problems.append(
                f"{len(absent)} missing from {_where(field, files)} "
                f"(e.g. {', '.join(absent[:_EXAMPLES])})"
            )
    return problems


def _where(field: str, files: OfficialFiles) -> str:
    """The file (and group) holding ``field``, e.g. ``tgif_btup_f_obj10.hdf5/image_features``."""
    file, group = _SOURCES[field]
    return getattr(files, file) + (f"/{group}" if group else "")


def _warn_skipped(keys: list[str], reason: str) -> None:
    if keys:
        examples = ", ".join(map(repr, keys[:_EXAMPLES]))
        log.warning("leaving out %d videos that %s (e.g. %s)", len(keys), reason, examples)


def _open_hdf5(path: Path) -> h5py.File:
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


def _tables(handles: Mapping[str, h5py.File]) -> dict[str, h5py.Group]:
    """Field -> the file or group holding one dataset per video; a group that is absent or is
    a dataset is an error naming the file."""
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


def _dataset(table: h5py.Group, key: str) -> h5py.Dataset:
    """The video's dataset in ``table``; anything else there is an error naming file and path."""
    item = table.get(key)
    if not isinstance(item, h5py.Dataset):
        found = "missing" if item is None else "a group, not a dataset"
        raise InvalidInput(
            f"{table.file.filename} dataset {table.name.rstrip('/')}/{key} is {found}; {_AGAIN}"
        )
    return item


def _video_datasets(tables: Mapping[str, h5py.Group], key: str) -> dict[str, h5py.Dataset]:
    """Field -> the video's dataset, checked against the store's shapes: (T, A) appearance,
    (T, M) motion, (T, N, A) and (T, N, M) objects, (T, N, 6) boxes, numbers only. T is left to
    the callers (videos whose files disagree on T may be skipped)."""
    datasets = {field: _dataset(table, key) for field, table in tables.items()}
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


def _read(dataset: h5py.Dataset, key: str) -> np.ndarray:
    """The dataset's array; data HDF5 cannot read means a damaged file."""
    try:
        return dataset[()]
    except OSError as error:
        raise InvalidInput(
            f"{_name(dataset)} (video {key!r}) cannot be read ({_reason(error)}); {_AGAIN}"
        ) from None


def read_key_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Our key -> official key, from a two-column TSV or from TGIF-QA question files.

    A TGIF-QA file (tab-separated with a header naming ``gif_name`` and ``key``) maps each GIF
    name to its ``key``; any other file is read as ``our_key<TAB>official_key`` lines.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"no key-map file {path}")
    reader = csv.reader(io.StringIO(_key_map_text(path), newline=""), delimiter="\t")
    try:
        rows = list(reader)
    except csv.Error as error:
        raise InvalidInput(
            f"{path}:{reader.line_num}: {error}; expected our_key<TAB>official_key lines"
        ) from None
    if not rows:
        raise InvalidInput(f"{path} is empty; expected our_key<TAB>official_key lines")
    header = rows[0]
    if "gif_name" in header and "key" in header:
        name, key = header.index("gif_name"), header.index("key")
        return {row[name]: row[key] for row in rows[1:] if len(row) > max(name, key)}
    mapping = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise InvalidInput(f"{path}:{line}: expected our_key<TAB>official_key, got {row!r}")
        mapping[row[0]] = row[1]
    return mapping


def _key_map_text(path: Path) -> str:
    """The key map's text; a byte that is not UTF-8, or a NUL (a binary file), is reported
    with its line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        raise InvalidInput(
            f"{path}:{line}: byte 0x{error.object[error.start]:02x} is not UTF-8 text; a key map "
            "is a text file (a TGIF-QA question file or our_key<TAB>official_key lines) saved "
            "as UTF-8"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InvalidInput(
            f"{path}:{line}: a NUL byte: this is a binary file, not a key map (a TGIF-QA "
            "question file or our_key<TAB>official_key lines)"
        )
    return text


class OfficialFeatures:
    """Reads the four official files of one dataset in place, like a ``FeatureStore``.

    Only videos present in all four files (and in ``spatial_features``) are listed. The files
    are opened on first access in each process (HDF5 handles must not cross a fork) and the
    object pickles without them, so it works in DataLoader worker processes. Records carry the
    five MASN fields only: the official files have no pixel boxes, labels, scores or times.
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
        _check_present(self.path, dataset, self.files)
        with _open_hdf5(self.path / self.files.appearance) as file:
            first = next(iter(file), None)
            item = file.get(first) if first is not None else None
            dtype = item.dtype.name if isinstance(item, h5py.Dataset) else "float32"
        self.feature_dtype: str = dtype
        self._handles: dict[str, h5py.File] | None = None
        self._tables: dict[str, h5py.Group] | None = None
        self._pid: int | None = None
        self._identity: dict[str, tuple[int, int]] | None = None
        self._keys: list[str] | None = None
        self._key_set: frozenset[str] = frozenset()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": None, "_tables": None, "_pid": None}

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
                    "; ".join(_missing_report(everywhere, every, self.files)),
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

    def num_frames(self, key: str) -> int:
        """T, the number of sampled frames of ``key`` (from the appearance shape, no data read)."""
        self._check_key(key)
        return int(_dataset(self._open()["appearance"], key).shape[0])

    def read(self, key: str, fields: Iterable[str] | None = None) -> VideoRecord:
        """The video's record; only ``fields`` are read (all when None), the others are None.

        Raises ValueError when the four files disagree on T for ``key``.
        """
        wanted = FIELDS if fields is None else tuple(fields)
        unknown = sorted(set(wanted) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; choose from {list(FIELDS)}")
        self._check_key(key)
        datasets = _video_datasets(self._open(), key)
        lengths = {field: dataset.shape[0] for field, dataset in datasets.items()}
        if len(set(lengths.values())) > 1:
            found = ", ".join(f"{_where(field, self.files)}: {n}" for field, n in lengths.items())
            raise InvalidInput(
                f"video {key!r} has different numbers of frames T across the official files in "
                f"{self.path} ({found}); re-extract it or leave it out"
            )
        arrays = {field: _read(datasets[field], key) for field in wanted if field in datasets}
        return VideoRecord(key=key, **arrays)

    def close(self) -> None:
        """Closes this process's handles (a later access reopens them)."""
        if self._handles is not None and self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = self._tables = None

    def _open(self) -> dict[str, h5py.Group]:
        """Field -> its table (file or group), opened once per process."""
        if self._tables is None or self._pid != os.getpid():
            # Handles inherited through fork belong to the parent: leave them alone.
            handles: dict[str, h5py.File] = {}
            try:
                for name in _FILE_ATTRS:
                    handles[name] = _open_hdf5(self.path / getattr(self.files, name))
                identity = {
                    name: _identity(handle.id.get_vfd_handle()) for name, handle in handles.items()
                }
                if self._identity not in (None, identity):
                    changed = [
                        getattr(self.files, name)
                        for name in _FILE_ATTRS
                        if self._identity[name] != identity[name]
                    ]
                    raise RuntimeError(
                        f"{', '.join(changed)} in {self.path} was replaced after it was first "
                        "read; create a new OfficialFeatures to read the new files"
                    )
                tables = _tables(handles)
            except BaseException:
                for handle in handles.values():
                    handle.close()
                raise
            self._handles, self._tables = handles, tables
            self._pid, self._identity = os.getpid(), identity
        return self._tables

    def _check_key(self, key: str) -> None:
        if key not in self:
            close = difflib.get_close_matches(str(key), self.keys(), n=3)
            hint = f"; close keys: {', '.join(map(repr, close))}" if close else ""
            raise UnknownName(
                f"no video {key!r} in all four official {self.dataset} files in {self.path}{hint}"
            )


def _identity(descriptor: int) -> tuple[int, int]:
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino


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
    complete = [dataset for dataset, names in present.items() if len(names) == len(_FILE_ATTRS)]
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
