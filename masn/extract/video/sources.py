"""The videos of a dataset, keyed the way its questions name them.

Each dataset (:mod:`masn.datasets`) says which files are its videos and how each is keyed:
"folder" lists any collection, keyed by relative path; MSVD-QA keys its clips through MSVD's
name mapping, MSRVTT-QA and NExT-QA by file name, TGIF-QA by GIF name. Folders are searched
recursively (following symlinks); hidden files and folders (names starting with ".", e.g. macOS
"._x.mp4" resource forks) are ignored; folders that cannot be read (permissions) are skipped
with a warning naming them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from masn.datasets import dataset_names, get_dataset
from masn.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".gif", ".flv", ".wmv"}
    | {".3gp", ".ts"}
)
_EXAMPLES = 5


@dataclass(frozen=True)
class VideoSource:
    """One video file and the key its features and questions go by."""

    key: str
    path: Path


def _video_files(root: Path) -> list[Path]:
    """Video files under ``root`` (by extension, any case), in a deterministic order.

    Subfolders that cannot be listed are skipped with one warning (count and names).
    """
    found: list[Path] = []
    visited: set[str] = set()
    unreadable: list[OSError] = []
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable.append):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop or a folder linked twice
            subfolders.clear()
            continue
        visited.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found.extend(
            Path(folder) / name
            for name in sorted(names)
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_EXTENSIONS
        )
    if unreadable and unreadable[0].filename == str(root):
        raise InvalidInput(
            f"cannot read the videos folder {root} ({unreadable[0].strerror}): check its "
            "permissions"
        )
    if unreadable:
        names = ", ".join(
            f"{Path(str(error.filename)).relative_to(root).as_posix()} ({error.strerror})"
            for error in unreadable[:_EXAMPLES]
        )
        log.warning(
            "could not read %d folder(s) under %s, their videos are skipped: %s%s",
            len(unreadable),
            root,
            names,
            ", ..." if len(unreadable) > _EXAMPLES else "",
        )
    return found


def _warn_skipped(what: str, paths: Iterable[Path], root: Path) -> None:
    paths = list(paths)
    if paths:
        examples = ", ".join(path.relative_to(root).as_posix() for path in paths[:_EXAMPLES])
        log.warning("skipped %d %s under %s, e.g. %s", len(paths), what, root, examples)


def list_videos(
    videos_dir: str | Path, dataset: str, mapping: Path | None = None
) -> list[VideoSource]:
    """The videos under ``videos_dir`` with their keys, sorted by key.

    ``dataset`` names a dataset of :mod:`masn.datasets`; ``mapping`` replaces MSVD's bundled
    name mapping. Files that cannot be keyed are skipped with a warning (count and examples);
    two files with the same key are an error.
    """
    if dataset not in dataset_names():
        raise InvalidInput(
            f"unknown dataset {dataset!r}: choose one of {', '.join(dataset_names())}"
        )
    described = get_dataset(dataset)
    root = Path(videos_dir)
    if not root.is_dir():
        raise MissingInput(f"videos folder {root} {_not_a_folder(root)}")
    key = described.keyer(mapping)
    files = _video_files(root)
    extension = described.video_extension
    if extension is not None:
        _warn_skipped(
            f"video files that are not {extension} (use dataset 'folder' to list them)",
            (path for path in files if path.suffix.lower() != extension),
            root,
        )
        files = [path for path in files if path.suffix.lower() == extension]
    keyed: list[VideoSource] = []
    unkeyed: list[Path] = []
    for path in files:
        found = key(path.relative_to(root).as_posix())
        if found is None:
            unkeyed.append(path)
        else:
            keyed.append(VideoSource(found, path))
    _warn_skipped(f"{extension or 'video'} files not {described.keyed}", unkeyed, root)

    by_key: dict[str, Path] = {}
    clashes: list[str] = []
    for source in keyed:
        if source.key in by_key:
            clashes.append(f"{source.key}: {by_key[source.key]} and {source.path}")
        by_key.setdefault(source.key, source.path)
    if clashes:
        raise InvalidInput(
            f"{len(clashes)} keys name more than one video under {root} (keep one file per key): "
            + "; ".join(clashes[:_EXAMPLES])
        )
    if not keyed:
        log.warning("no %s videos found under %s", dataset, root)
    return sorted(keyed, key=lambda source: source.key)


def _not_a_folder(path: Path) -> str:
    """Why ``path``, which is no folder, cannot be a videos folder, in words."""
    from masn.extract.video.decode import unreadable  # imported late: it imports av

    if not path.exists() and not path.is_symlink():
        return "does not exist"
    why = unreadable(path)
    return "is a file, not a folder" if why is None else f"is not a folder: {why}"
