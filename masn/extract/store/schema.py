"""What a feature store holds: its fields, their shapes and stored dtypes, one video's record,
the provenance of a store, the escaping of video keys, and the checks every array passes before
it is written.

Per video (DESIGN.md, "Extraction contract"): the datasets of ``FIELDS``, shaped as ``SHAPES``
says (T sampled frames, N objects, A / M appearance / motion widths), and the ``METADATA``
attributes plus ``key``. ``path`` is text, or the raw bytes of a path that is not valid UTF-8
(read back as ``os.fsdecode`` gives it, so the file can be opened again). Features are stored in
the store's feature dtype (float16 by default), the other fields in ``FIXED_DTYPES``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

import h5py
import numpy as np

from masn.errors import InvalidInput

FeatureDtype = Literal["float16", "float32"]

# Symbolic shape of every field: T sampled frames, N objects, A / M appearance / motion widths.
SHAPES: dict[str, tuple[str | int, ...]] = {
    "appearance": ("T", "A"),
    "appearance_objects": ("T", "N", "A"),
    "motion": ("T", "M"),
    "motion_objects": ("T", "N", "M"),
    "box_geometry": ("T", "N", 6),
    "boxes": ("T", "N", 4),
    "frame_times": ("T",),
    "object_labels": ("T", "N"),
    "attribute_labels": ("T", "N"),
    "object_scores": ("T", "N"),
    "attribute_scores": ("T", "N"),
}
FEATURE_FIELDS = ("appearance", "appearance_objects", "motion", "motion_objects")
REQUIRED_FIELDS = (*FEATURE_FIELDS, "box_geometry")
FIELDS = tuple(SHAPES)
# Stored dtypes of the non-feature fields (features use the store's feature dtype).
FIXED_DTYPES = {
    "box_geometry": np.dtype(np.float32),
    "boxes": np.dtype(np.float32),
    "frame_times": np.dtype(np.float64),
    "object_labels": np.dtype(np.int16),
    "attribute_labels": np.dtype(np.int16),
    "object_scores": np.dtype(np.float32),
    "attribute_scores": np.dtype(np.float32),
}


@dataclass(eq=False)
class VideoRecord:
    """One video's features (numpy arrays, T sampled frames x N objects) and metadata.

    The ``REQUIRED_FIELDS`` must be set to write a record; the other arrays may be None (a store
    imported from the official files has no pixel boxes, labels or scores), and
    ``FeatureStore.read`` leaves fields that were not asked for as None. Unknown metadata:
    width, height and frames 0, source_fps and duration NaN.
    """

    key: str
    appearance: np.ndarray | None = None
    appearance_objects: np.ndarray | None = None
    motion: np.ndarray | None = None
    motion_objects: np.ndarray | None = None
    box_geometry: np.ndarray | None = None
    boxes: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    object_labels: np.ndarray | None = None
    attribute_labels: np.ndarray | None = None
    object_scores: np.ndarray | None = None
    attribute_scores: np.ndarray | None = None
    path: str = ""
    width: int = 0
    height: int = 0
    source_fps: float = math.nan
    duration: float = math.nan
    frames: int = 0

    @staticmethod
    def geometry_from_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """(..., 6) float32 ``[x1/W, y1/H, x2/W, y2/H, (x2-x1)/W, (y2-y1)/H]`` of pixel boxes.

        The six location numbers MASN reads (masn_reference §2.4); all-zero (padding) boxes
        give all-zero rows.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape[-1:] != (4,):
            raise ValueError(f"boxes must end in (x1, y1, x2, y2), got shape {boxes.shape}")
        x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
        geometry = [x1 / width, y1 / height, x2 / width, y2 / height]
        geometry += [(x2 - x1) / width, (y2 - y1) / height]
        return np.stack(geometry, axis=-1).astype(np.float32)


# Video metadata attributes and their Python types.
METADATA: dict[str, type] = {
    "path": str,
    "width": int,
    "height": int,
    "source_fps": float,
    "duration": float,
    "frames": int,
}


@dataclass(frozen=True)
class Provenance:
    """What made a store: the extraction configuration, the weights' checksums, the time, and
    the settings of the command that wrote it last (YAML; not compared: a rerun may change how
    it runs, never what it computes)."""

    config: dict[str, Any]
    weights: dict[str, str]
    created: str
    settings: str = ""

    @classmethod
    def new(
        cls, config: Mapping[str, Any], weights: Mapping[str, str], settings: str = ""
    ) -> Provenance:
        """Provenance stamped now; config and weights normalised through JSON."""
        try:
            config_ = json.loads(json.dumps(dict(config)))
            weights_ = json.loads(json.dumps(dict(weights)))
        except TypeError as error:
            raise TypeError(
                f"config and weights must be JSON-serialisable (dicts, lists, str...): {error}"
            ) from None
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(config_, weights_, created, settings)

    def mismatch(self, other: Provenance) -> list[str]:
        """What differs from ``other`` (ignoring the creation time), e.g. ``config (fps)``."""
        found = []
        for name in ("config", "weights"):
            mine, theirs = getattr(self, name), getattr(other, name)
            keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if keys:
                found.append(f"{name} ({', '.join(keys)})")
        return found


def escape_key(key: str) -> str:
    """The HDF5 group name of a video key; rejects keys that cannot name a group.

    Keys of folder datasets are relative paths and may contain "/", hence
    ``quote(key, safe="")``; ``urllib.parse.unquote`` gives the key back.
    """
    if not isinstance(key, str) or key in ("", ".", ".."):
        raise InvalidInput(f"invalid video key {key!r}: use a non-empty name other than . and ..")
    try:
        return quote(key, safe="")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"video key {key!r} is not valid Unicode (an undecodable file name?); rename the file"
        ) from None


def check_dtype(dtype: str) -> None:
    """Refuses feature dtypes other than float16 and float32."""
    if dtype not in ("float16", "float32"):
        raise InvalidInput(f"feature dtype must be float16 or float32, got {dtype!r}")


def prepare_arrays(record: VideoRecord, dtype: FeatureDtype) -> dict[str, np.ndarray]:
    """The record's arrays in their stored dtypes, after checking presence, shapes and values."""
    escape_key(record.key)
    missing = [name for name in REQUIRED_FIELDS if getattr(record, name) is None]
    if missing:
        raise ValueError(f"video {record.key!r}: missing required field(s) {', '.join(missing)}")
    arrays = {
        name: np.asarray(value) for name in FIELDS if (value := getattr(record, name)) is not None
    }
    check_shapes(record.key, arrays)
    return {name: stored_array(record.key, name, array, dtype) for name, array in arrays.items()}


def check_shapes(
    key: str, arrays: Mapping[str, np.ndarray], sizes: dict[str, int] | None = None
) -> None:
    """Every array matches its symbolic shape with one size per symbol; ``sizes`` carries the
    object and feature widths from earlier blocks of the same video (T may differ)."""
    sizes = {} if sizes is None else sizes
    sizes.pop("T", None)
    consistent = True
    for name, array in arrays.items():
        pattern = SHAPES[name]
        if array.ndim != len(pattern):
            consistent = False
            continue
        for symbol, size in zip(pattern, array.shape, strict=True):
            expected = sizes.setdefault(symbol, size) if isinstance(symbol, str) else symbol
            consistent &= size == expected and size > 0
    if not consistent:
        found = ", ".join(f"{name} {tuple(array.shape)}" for name, array in arrays.items())
        wanted = ", ".join(f"{name} ({', '.join(map(str, SHAPES[name]))})" for name in arrays)
        raise ValueError(
            f"video {key!r}: inconsistent shapes {found}; expected {wanted} with one T (sampled "
            "frames >= 1) and one N (objects >= 1) throughout"
        )


def stored_array(key: str, name: str, array: np.ndarray, dtype: FeatureDtype) -> np.ndarray:
    """``array`` of field ``name`` in its stored dtype; refuses values that dtype cannot hold
    (integers out of range, NaN or inf, floats too large for float16)."""
    target = np.dtype(dtype) if name in FEATURE_FIELDS else FIXED_DTYPES[name]
    if target.kind == "i":
        if array.dtype.kind not in "iu":
            raise ValueError(f"video {key!r}: {name} must hold integers, got {array.dtype}")
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise ValueError(f"video {key!r}: {name} has values outside the {target} range")
    elif array.dtype.kind not in "iuf":
        raise ValueError(f"video {key!r}: {name} must be numeric, got {array.dtype}")
    with np.errstate(over="ignore"):  # overflow is reported below, with the fix
        stored = array.astype(target, copy=False)
    if stored.dtype.kind == "f" and not np.isfinite(stored).all():
        if not np.isfinite(array).all():
            cause = "NaN or inf"
        elif target == np.float16:
            cause = "values too large for float16; write a float32 store"
        else:
            cause = f"values too large for {target}"
        raise ValueError(f"video {key!r}: {name} has non-finite values ({cause})")
    return stored


def record_metadata(record: VideoRecord) -> dict[str, Any]:
    """The record's ``METADATA`` values by name."""
    return {name: getattr(record, name) for name in METADATA}


def write_metadata(group: h5py.Group, key: str, metadata: Mapping[str, Any]) -> None:
    """Writes ``key`` and the ``METADATA`` attributes of a video group (undecodable paths as
    their bytes)."""
    group.attrs["key"] = key
    for name, kind in METADATA.items():
        value = kind(metadata[name])
        if name == "path":
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # an undecodable file name: keep its bytes
                value = np.bytes_(os.fsencode(value))
        group.attrs[name] = value


def read_metadata(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """The ``METADATA`` attributes of a video group, as ``write_metadata`` wrote them."""
    metadata = {}
    for name, kind in METADATA.items():
        value = attrs[name]
        metadata[name] = os.fsdecode(value) if isinstance(value, bytes) else kind(value)
    return metadata
