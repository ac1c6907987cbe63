"""Moving features between our store and the official MASN four-file layout.

``export_official`` hands our features to the official code; ``import_official`` builds a store
from the authors' released features (or any official-layout files); ``read_key_map`` reads the
our key -> official key maps both take. Key-map files must be UTF-8 text; a bad byte is
reported with its line. The layout itself and the checks of damaged files: ``official_layout``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from masn.atomic import removed_if_left_empty
from masn.caller import on_command_line, option
from masn.datasets import OfficialDataset
from masn.errors import InvalidInput, MissingInput
from masn.extract.store.official_layout import (
    EXAMPLES_SHOWN,
    FILE_ROLES,
    OFFICIAL_KEY,
    OfficialFiles,
    check_present,
    field_tables,
    missing_report,
    official_files,
    open_official,
    read_dataset,
    video_dataset,
    video_datasets,
)
from masn.extract.store.reader import FeatureStore
from masn.extract.store.schema import REQUIRED_FIELDS, FeatureDtype, Provenance, VideoRecord
from masn.extract.store.store_file import DamagedVideo, add_video, atomic_hdf5, new_store
from masn.roles import ROLES

log = logging.getLogger(__name__)


def _key_hint(files: OfficialFiles) -> str:
    """What the official video keys of a dataset are, and how to rename ours to match."""
    example = files.key_map_file or "FILE"
    if on_command_line():
        key_map, lines = "--key-map FILE", f"--key-map {example}"
    else:  # in Python a key map is a mapping: read_key_map reads one from the same files
        key_map, lines = "key_map=read_key_map(FILE)", f"key_map=read_key_map({example!r})"
    if files.key_map_file is not None:
        return (
            f"{files.keys}; pass a question file (e.g. {files.key_map_file}) as the key map: "
            f"{lines}"
        )
    return f"{files.keys}; rename with a key map of our_key<TAB>official_key lines: {key_map}"


EXPORT_FIX = "re-extract them, or leave them out with a key map that does not name them"


def _damaged_count(count: int) -> str:
    return f"{count} of its videos {'is' if count == 1 else 'are'} damaged"


def export_official(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    dataset: OfficialDataset,
    key_map: Mapping[str, str] | None = None,
) -> list[Path]:
    """Writes the store's features as the four official files in ``out_dir``; returns them.

    Video keys are renamed through ``key_map`` (our key -> official key) when given; videos it
    does not name are left out with a warning. Every file is replaced atomically, and only
    when every video is sound: a damaged video (``FeatureStore.damaged``, or NaN values met
    while reading) is an error and nothing is written.
    """
    files = official_files(dataset)
    out_dir = Path(out_dir)
    with FeatureStore(store_path) as store:
        names = _official_names(store.keys(), dataset, key_map)
        damaged = store.damaged(names)  # and NaN values are refused as each video is read
        if damaged:
            shown = "; ".join(f"{key!r} ({problem})" for key, problem in list(damaged.items())[:3])
            raise InvalidInput(
                f"cannot export {store.path}: {_damaged_count(len(damaged))}: {shown}; {EXPORT_FIX}"
            )
        paths = [out_dir / name for name in files.names()]
        with removed_if_left_empty(out_dir), contextlib.ExitStack() as stack:
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
                try:
                    record = store.read(key, fields=REQUIRED_FIELDS)
                except DamagedVideo as error:
                    raise DamagedVideo(f"cannot export: {error.problem}; {EXPORT_FIX}") from None
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
        _warn_skipped([key for key in keys if key not in key_map], "have no entry in the key map")
    invalid = [name for name in names.values() if not OFFICIAL_KEY[dataset].fullmatch(name)]
    if invalid:
        raise InvalidInput(
            f"{len(invalid)} video key(s) are not official {dataset} keys (e.g. "
            f"{', '.join(map(repr, invalid[:EXAMPLES_SHOWN]))}): official keys are "
            f"{_key_hint(official_files(dataset))}"
        )
    if len(set(names.values())) != len(names):
        raise InvalidInput("the key map gives several videos the same official key")
    return names


def import_official(
    in_dir: str | os.PathLike[str],
    dataset: OfficialDataset,
    out_path: str | os.PathLike[str],
    key_map: Mapping[str, str] | None = None,
    skip_incomplete: bool = False,
    dtype: FeatureDtype = "float16",
) -> Path:
    """Builds a store at ``out_path`` from the four official files in ``in_dir``; returns it.

    Videos missing from some files or whose files disagree on T are an error listing them;
    with ``skip_incomplete`` they are left out with a warning instead. With ``key_map`` (our
    key -> official key, as for ``export_official``) videos are stored under our keys and
    official videos it does not name are left out; files that leave no video to import are an
    error (no empty store is written). The store has no pixel boxes, labels or
    scores, and its provenance is the official release with unknown weights.
    """
    files = official_files(dataset)
    in_dir = Path(in_dir)
    check_present(in_dir, files)
    ours = _our_keys(key_map)
    with contextlib.ExitStack() as stack:
        opened = {
            role: stack.enter_context(open_official(in_dir / getattr(files, role)))
            for role in FILE_ROLES
        }
        tables = field_tables(opened)
        complete = _complete_keys(tables, files, skip_incomplete)
        if ours is not None:
            _warn_skipped(
                [key for key in complete if key not in ours], "have no entry in the key map"
            )
            complete = [key for key in complete if key in ours]
        if not complete:
            named = " that the key map names" if ours is not None else ""
            raise InvalidInput(
                f"nothing to import: the official {dataset} files in {in_dir} hold no complete "
                f"video{named}; check the folder (or the key map) and the --dataset"
            )
        provenance = Provenance.new(
            {"source": "official MASN features", "dataset": dataset},
            {role: "unknown" for role in ROLES},
        )
        with new_store(out_path, provenance, dtype) as videos:
            for official in complete:
                arrays = {
                    field: read_dataset(video_dataset(table, official), official)
                    for field, table in tables.items()
                }
                key = official if ours is None else ours[official]
                add_video(videos, VideoRecord(key=key, **arrays), dtype)
    log.info("imported %d official %s videos into %s", len(complete), dataset, out_path)
    return Path(out_path)


def _our_keys(key_map: Mapping[str, str] | None) -> dict[str, str] | None:
    """Official key -> our key, from our key -> official key."""
    if key_map is None:
        return None
    inverse = {str(official): key for key, official in key_map.items()}
    if len(inverse) != len(key_map):
        raise InvalidInput("the key map gives several videos the same official key")
    return inverse


def _complete_keys(
    tables: Mapping[str, h5py.Group], files: OfficialFiles, skip_incomplete: bool
) -> list[str]:
    """Official keys present in all files with one T; reports (or raises on) the others."""
    everywhere = {field: set(table) for field, table in tables.items()}
    keys = sorted(set().union(*everywhere.values()))
    problems = missing_report(everywhere, keys, files)
    complete = [key for key in keys if all(key in present for present in everywhere.values())]
    uneven = {}
    for key in complete:
        datasets = video_datasets(tables, key)
        lengths = {field: dataset.shape[0] for field, dataset in datasets.items()}
        if len(set(lengths.values())) > 1:
            uneven[key] = lengths
    if uneven:
        examples = "; ".join(f"{key}: {lengths}" for key, lengths in list(uneven.items())[:3])
        problems.append(f"{len(uneven)} with different T across the files ({examples})")
    if problems:
        report = f"of {len(keys)} videos, " + "; ".join(problems)
        if not skip_incomplete:
            raise InvalidInput(
                f"{report}; pass {option('skip_incomplete', True)} to import only the others"
            )
        log.warning("skipping incomplete videos: %s", report)
    return [key for key in complete if key not in uneven]


def _warn_skipped(keys: list[str], reason: str) -> None:
    if keys:
        examples = ", ".join(map(repr, keys[:EXAMPLES_SHOWN]))
        log.warning("leaving out %d videos that %s (e.g. %s)", len(keys), reason, examples)


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
