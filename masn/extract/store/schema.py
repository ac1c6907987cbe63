"""What a feature store holds: its fields, their shapes and stored dtypes, one video's record,
the provenance of a store, the escaping of video keys, and the checks every array passes before
it is written.

Per video: the datasets of ``FIELDS``, shaped as ``SHAPES`` says (T sampled frames, N objects,
one width per feature, the same for every video of a store), and the ``METADATA``
attributes plus ``key``. ``path`` is text, or the raw bytes of a path that is not valid UTF-8
(read back as ``os.fsdecode`` gives it, so the file can be opened again). Features are stored in
the store's feature dtype (float16 by default), the other fields in ``FIXED_DTYPES``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

import h5py
import numpy as np

from masn import settings
from masn.errors import InvalidInput
from masn.extract.settings import ExtractionConfig
from masn.roles import FEATURES

FeatureDtype = Literal["float16", "float32"]

# Symbolic shape of every field: T sampled frames, N objects, and the width of each feature
# (A / A' of the appearance network's global and object features, M / M' of the motion one's).
SHAPES: dict[str, tuple[str | int, ...]] = {
    "appearance": ("T", "A"),
    "appearance_objects": ("T", "N", "A'"),
    "motion": ("T", "M"),
    "motion_objects": ("T", "N", "M'"),
    "box_geometry": ("T", "N", 6),
    "boxes": ("T", "N", 4),
    "frame_times": ("T",),
    "object_labels": ("T", "N"),
    "attribute_labels": ("T", "N"),
    "object_scores": ("T", "N"),
    "attribute_scores": ("T", "N"),
}
FEATURE_FIELDS = FEATURES
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
    width, height and frames 0, source_fps and duration NaN. ``provenance``: how the features
    were made (the store's; None where unknown), so that a model can tell features made
    otherwise than its training features.
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
    provenance: Provenance | None = None

    @staticmethod
    def geometry_from_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """(..., 6) float32 ``[x1/W, y1/H, x2/W, y2/H, (x2-x1)/W, (y2-y1)/H]`` of pixel boxes.

        The six location numbers MASN reads (docs/official-masn.md, "Box geometry"); all-zero
        (padding) boxes give all-zero rows.
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


LEGACY_ROLES = {"resnet152": "appearance", "i3d": "motion"}
_RANDOM = re.compile(r"random \(seed (-?\d+)\)")


RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS"
"""How figures of features from random networks start their warning."""


def random_weights_label(seed: int) -> str:
    """What a store records as the weights of a randomly initialised network."""
    return f"random (seed {seed})"


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

    @classmethod
    def stored(
        cls, config: dict[str, Any], weights: dict[str, str], created: str, settings: str = ""
    ) -> Provenance:
        """Provenance as a store holds it, in today's names: stores written before the network
        roles were renamed say ``i3d`` (the motion network) and ``resnet152``."""
        weights = {LEGACY_ROLES.get(name, name): value for name, value in weights.items()}
        if "i3d" in config:
            config = {**config, "motion": config["i3d"], "appearance": "resnet152"}
            del config["i3d"]
            if isinstance(config.get("detector"), dict):
                config["detector"] = {"network": "vg-frcnn", **config["detector"]}
        return cls(config, weights, created, settings)

    def extraction_config(self) -> ExtractionConfig:
        """The extraction settings that made the store's features; ``InvalidInput`` for
        features not extracted here (e.g. imported official ones)."""
        return settings.from_dict(ExtractionConfig, self.config, "the store's extraction settings")

    def random_seed(self) -> int | None:
        """The seed of the random networks the features come from (None: published weights)."""
        seeds = {
            int(m.group(1)) for value in self.weights.values() if (m := _RANDOM.fullmatch(value))
        }
        return seeds.pop() if len(seeds) == 1 else None

    def weights_kind(self, role: str) -> str | None:
        """How ``role``'s network was initialised: "random (seed N)", "published" (converted
        published weights), or None where the store does not say."""
        value = self.weights.get(role)
        if value is None or value == "unknown":
            return None
        return value if _RANDOM.fullmatch(value) else "published"

    def differences(self, trained: Provenance) -> FeatureDifferences:
        """How features made as ``self`` says differ from features made as ``trained`` says
        (e.g. a model's training features); empty where either is not extracted here."""
        try:
            mine, theirs = self.extraction_config(), trained.extraction_config()
        except InvalidInput:
            return FeatureDifferences()
        made, wanted = _flat(mine.to_dict()), _flat(theirs.to_dict())
        settings = [
            f"{name} {value!r} (trained on {wanted[name]!r})"
            for name, value in made.items()
            if name.rpartition(".")[2] not in NUMERICS and value != wanted[name]
        ]
        networks: list[str] = []
        random: dict[str, list[str]] = {}  # "kind (trained on kind)" -> roles
        for role in self.weights.keys() & trained.weights.keys():
            kind, trained_kind = self.weights_kind(role), trained.weights_kind(role)
            if None in (kind, trained_kind) or self.weights[role] == trained.weights[role]:
                continue
            if kind == trained_kind == "published":
                networks.append(
                    f"{role} weights {self.weights[role]} (trained on {trained.weights[role]})"
                )
            else:
                random.setdefault(f"{kind} (trained on {trained_kind})", []).append(role)
        randomly = [f"{', '.join(sorted(roles))} {pair}" for pair, roles in random.items()]
        return FeatureDifferences(tuple(settings), tuple(sorted(networks)), tuple(randomly))

    def mismatch(self, other: Provenance) -> list[str]:
        """What differs from ``other`` (ignoring the creation time), e.g. ``config (fps)``."""
        found = []
        for name in ("config", "weights"):
            mine, theirs = getattr(self, name), getattr(other, name)
            keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if keys:
                found.append(f"{name} ({', '.join(keys)})")
        return found


NUMERICS = ("precision", "feature_dtype")
"""Extraction settings that change features by rounding only (bf16 autocast, float16 storage)."""


@dataclass(frozen=True)
class FeatureDifferences:
    """What makes two sets of features differ, each as "what (trained on what)".

    settings: extraction settings (sizes, rates, networks chosen, detector settings) other than
    the ``NUMERICS``. networks: the same network with other published weights. random: a
    network that is random on one side and published, or randomly seeded otherwise, on the
    other.
    """

    settings: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    random: tuple[str, ...] = ()


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"detector.min_size": 600, ...}``."""
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


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


Layout = dict[str, tuple[tuple[int, ...], np.dtype] | None]
"""A video's datasets as their headers describe them: field -> (shape, dtype), None if missing."""


def dataset_layout(item: object) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of an HDF5 dataset, from its header (None: absent, or not a dataset)."""
    return (tuple(item.shape), item.dtype) if isinstance(item, h5py.Dataset) else None


def layout_problems(
    layouts: Mapping[str, Layout],
    dtypes: Mapping[str, np.dtype | None],
    widths: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The videos (of ``layouts``: key -> Layout) whose datasets a reader cannot use, each with
    what is wrong: the dataset, what was expected, what was found, e.g. ``appearance: expected
    float16 (T, 2048), found float16 (4, 1024)``. ``dtypes``: the dtype each field must have
    (None: any number). Ranks follow ``SHAPES``; T must agree across a video's fields; feature
    widths are ``widths`` (the source's, which the model is built with), and object counts (and
    widths when not given) the ones most of the videos have. Headers only: no data is read."""
    problems: dict[str, str] = {}
    sizes: dict[tuple[str, int], Counter[int]] = {}
    for key, layout in layouts.items():
        for field, found in layout.items():
            if found is None:
                problems[key] = f"{field}: missing"
            elif len(found[0]) != len(SHAPES[field]):
                pattern = ", ".join(map(str, SHAPES[field]))
                problems[key] = f"{field}: expected ({pattern}), found {_shown(*found)}"
            if key in problems:
                break
        else:
            for field, (shape, _) in layout.items():  # type: ignore[misc]
                for axis in range(1, len(shape)):
                    sizes.setdefault((field, axis), Counter())[shape[axis]] += 1
    usual = {place: counts.most_common(1)[0][0] for place, counts in sizes.items()}
    for field, width in (widths or {}).items():
        usual[field, len(SHAPES[field]) - 1] = width
    for key, layout in layouts.items():
        if key in problems:
            continue
        first, (first_shape, _) = next(iter(layout.items()))  # type: ignore[misc]
        for field, (shape, dtype) in layout.items():  # type: ignore[misc]
            wanted = dtypes.get(field)
            expected = [usual[field, axis] for axis in range(1, len(shape))]
            if shape[0] != first_shape[0]:
                problems[key] = f"{field} has {shape[0]} sampled frames, {first} {first_shape[0]}"
            elif shape[0] == 0:
                problems[key] = f"{field}: no sampled frames"
            elif (dtype != wanted if wanted is not None else dtype.kind not in "iuf") or list(
                shape[1:]
            ) != expected:
                shown = ", ".join(["T", *map(str, expected)])
                name = np.dtype(wanted).name if wanted is not None else "numbers"
                problems[key] = f"{field}: expected {name} ({shown}), found {_shown(shape, dtype)}"
            if key in problems:
                break
    return problems


def _shown(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{dtype.name} {tuple(shape)}"


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
