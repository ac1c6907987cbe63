"""The official MASN four-file feature layout (masn_reference §2.1): export and import.

The official loaders open four HDF5 files per dataset, each keyed by the official video key
(TGIF: the integer ``key`` column of the TGIF-QA csv; MSVD ``vidN``; MSRVTT ``videoN``):
ResNet appearance (T, 2048), I3D motion (T, 2048), the detector file with groups
``image_features`` (T, 10, 2048) and ``spatial_features`` (T, 10, 6), and I3D RoIAlign motion
objects (T, 10, 2048), all float32. Exporting hands our features to the official code;
importing lets users train on the authors' released features.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from extract.store import (
    REQUIRED_FIELDS,
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


def official_files(dataset: str) -> OfficialFiles:
    """File names for ``dataset`` (tgif, msvd or msrvtt)."""
    if dataset not in OFFICIAL_FILES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(OFFICIAL_FILES)}")
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
        raise ValueError(
            f"{len(invalid)} video key(s) are not official {dataset} keys (e.g. "
            f"{', '.join(map(repr, invalid[:_EXAMPLES]))}): official keys are {_KEY_HINT[dataset]}"
        )
    if len(set(names.values())) != len(names):
        raise ValueError("key_map gives several videos the same official key")
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
            name: stack.enter_context(h5py.File(in_dir / getattr(files, name), "r", locking=False))
            for name in ("appearance", "motion", "objects", "motion_objects")
        }
        tables = {
            field: opened[file][group] if group else opened[file]
            for field, (file, group) in _SOURCES.items()
        }
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
                arrays = {field: table[official][()] for field, table in tables.items()}
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
        raise FileNotFoundError(f"{in_dir} lacks {', '.join(missing)}{hint}")


def _our_keys(key_map: Mapping[str, str] | None) -> dict[str, str] | None:
    """Official key -> our key, from our key -> official key."""
    if key_map is None:
        return None
    inverse = {str(official): key for key, official in key_map.items()}
    if len(inverse) != len(key_map):
        raise ValueError("key_map gives several videos the same official key")
    return inverse


def _complete_keys(
    tables: Mapping[str, h5py.Group], files: OfficialFiles, skip_incomplete: bool
) -> list[str]:
    """Official keys present in all files with one T; reports (or raises on) the others."""
    everywhere = {field: set(table) for field, table in tables.items()}
    keys = sorted(set().union(*everywhere.values()))
    problems = []
    for field, present in everywhere.items():
        absent = [key for key in keys if key not in present]
        if absent:
            file, group = _SOURCES[field]
            where = getattr(files, file) + (f"/{group}" if group else "")
            examples = ", ".join(absent[:_EXAMPLES])
            problems.append(f"{len(absent)} missing from {where} (e.g. {examples})")
    complete = [key for key in keys if all(key in present for present in everywhere.values())]
    uneven = {}
    for key in complete:
        lengths = {field: table[key].shape[0] for field, table in tables.items()}
        if len(set(lengths.values())) > 1:
            uneven[key] = lengths
    if uneven:
        examples = "; ".join(f"{key}: {lengths}" for key, lengths in list(uneven.items())[:3])
        problems.append(f"{len(uneven)} with different T across the files ({examples})")
    if problems:
        report = f"of {len(keys)} videos, " + "; ".join(problems)
        if not skip_incomplete:
            raise ValueError(f"{report}. Pass skip_incomplete=True to import only the others")
        log.warning("skipping incomplete videos: %s", report)
    return [key for key in complete if key not in uneven]


def _warn_skipped(keys: list[str], reason: str) -> None:
    if keys:
        examples = ", ".join(map(repr, keys[:_EXAMPLES]))
        log.warning("leaving out %d videos that %s (e.g. %s)", len(keys), reason, examples)


def read_key_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Our key -> official key, from a two-column TSV or from TGIF-QA question files.

    A TGIF-QA file (tab-separated with a header naming ``gif_name`` and ``key``) maps each GIF
    name to its ``key``; any other file is read as ``our_key<TAB>official_key`` lines.
    """
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path} is empty; expected our_key<TAB>official_key lines")
    header = rows[0]
    if "gif_name" in header and "key" in header:
        name, key = header.index("gif_name"), header.index("key")
        return {row[name]: row[key] for row in rows[1:] if len(row) > max(name, key)}
    mapping = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise ValueError(f"{path}:{line}: expected our_key<TAB>official_key, got {row!r}")
        mapping[row[0]] = row[1]
    return mapping
