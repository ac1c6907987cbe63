"""The videos of a dataset, keyed the way its QA annotations name them.

MSVD-QA says ``video_id`` N for the clip file ``<youtubeId>_<start>_<end>.avi`` (key ``vidN``
through MSVD's ``youtube_mapping.txt``, bundled in ``extract/data``); MSRVTT-QA uses ``videoN``
for ``videoN.mp4``; TGIF-QA uses the GIF name. "folder" lists any collection, keyed by relative
path. Folders are searched recursively (following symlinks); hidden files and folders (names
starting with ".", e.g. macOS "._x.mp4" resource forks) are ignored; folders that cannot be read
(permissions) are skipped with a warning naming them.

Keys are text that HDF5 and JSON can hold. A file name that is not valid UTF-8 gets an escaped
key (``escape_name``): each byte outside valid UTF-8 becomes ``%XX`` and "%" becomes ``%25``, so
``urllib.parse.unquote_to_bytes(key)`` gives the name's bytes back; valid UTF-8 names keep their
keys unchanged.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from masn.errors import InvalidInput, MissingInput

log = logging.getLogger(__name__)

DATASETS = ("msvd", "msrvtt", "tgif", "folder")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".gif", ".flv", ".wmv"}
    | {".3gp", ".ts"}
)
_DATASET_EXTENSION = {"msvd": ".avi", "msrvtt": ".mp4", "tgif": ".gif"}
_MSRVTT_NAME = re.compile(r"video\d+")
_EXAMPLES = 5


@dataclass(frozen=True)
class VideoSource:
    """One video file and the key its features and questions go by."""

    key: str
    path: Path


def load_msvd_mapping(path: Path | None = None) -> dict[str, str]:
    """MSVD clip name (``<youtubeId>_<start>_<end>``) -> ``vidN``; the bundled copy by default."""
    if path is None:
        where = "the bundled msvd_youtube_mapping.txt"
        text = (
            resources.files("masn.extract.video") / "data" / "msvd_youtube_mapping.txt"
        ).read_text(encoding="utf-8")
    else:
        where = str(path)
        text = Path(path).read_text(encoding="utf-8")
    mapping: dict[str, str] = {}
    keys: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InvalidInput(
                f"{where}, line {number}: expected '<youtubeId>_<start>_<end> vidN', got {line!r}"
            )
        name, key = parts
        if name in mapping or key in keys:
            raise InvalidInput(f"{where}, line {number}: {name} or {key} appears twice")
        mapping[name] = key
        keys.add(key)
    return mapping


def escape_name(name: str) -> str:
    """A key for a file name (as ``os`` decodes it): unchanged when the name is valid UTF-8;
    otherwise each undecodable byte becomes ``%XX`` and "%" becomes ``%25`` (reversible with
    ``urllib.parse.unquote_to_bytes``)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return name
    text = os.fsencode(name).decode("utf-8", errors="surrogateescape")
    return "".join(
        f"%{ord(char) - 0xDC00:02X}" if "\udc80" <= char <= "\udcff" else char.replace("%", "%25")
        for char in text
    )


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


def _key(dataset: str, stem: str, msvd_names: dict[str, str]) -> str | None:
    """The annotation key of a dataset file name (without extension), None if it has none."""
    if dataset == "msvd":
        return msvd_names.get(stem)
    if dataset == "msrvtt":
        return stem if _MSRVTT_NAME.fullmatch(stem) else None
    return escape_name(stem)


def list_videos(
    videos_dir: str | Path, dataset: str, mapping: Path | None = None
) -> list[VideoSource]:
    """The videos under ``videos_dir`` with their annotation keys, sorted by key.

    ``dataset`` is one of msvd, msrvtt, tgif, folder. ``mapping`` replaces MSVD's bundled
    name mapping. Files that cannot be keyed are skipped with a warning (count and examples);
    two files with the same key are an error.
    """
    if dataset not in DATASETS:
        raise InvalidInput(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if mapping is not None and dataset != "msvd":
        raise InvalidInput(f"a name mapping applies to msvd only, not to {dataset}")
    root = Path(videos_dir)
    if not root.is_dir():
        raise MissingInput(f"videos folder {root} does not exist or is not a folder")

    files = _video_files(root)
    keyed: list[VideoSource] = []
    if dataset == "folder":
        keyed = [
            VideoSource(escape_name(path.relative_to(root).as_posix()), path) for path in files
        ]
    else:
        extension = _DATASET_EXTENSION[dataset]
        own = [path for path in files if path.suffix.lower() == extension]
        _warn_skipped(
            f"video files that are not {extension} (use dataset 'folder' to list them)",
            (path for path in files if path.suffix.lower() != extension),
            root,
        )
        names = load_msvd_mapping(mapping) if dataset == "msvd" else {}
        unkeyed: list[Path] = []
        for path in own:
            key = _key(dataset, path.stem, names)
            if key is None:
                unkeyed.append(path)
            else:
                keyed.append(VideoSource(key, path))
        known = "in the MSVD name mapping" if dataset == "msvd" else "named videoN.mp4"
        _warn_skipped(f"{extension} files not {known}", unkeyed, root)

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
