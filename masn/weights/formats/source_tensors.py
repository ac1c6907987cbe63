"""What every converter shares: reading a published file and accounting for each of its tensors.

A converter must fill every tensor of our module and may drop only the source tensors it
documents as unused; :class:`SourceTensors` enforces both. Each tensor is taken once, with the
shape the published model has, and whatever is left at the end must match a documented
:class:`Unused` pattern. Anything else (a missing key, a wrong shape, an unknown key) means the
file is not the model the converter expects, and raises :class:`ConversionError` naming it.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from masn.errors import InvalidInput, MissingInput, root_cause
from masn.unpickle import UnsafePickleError, load_pickle, load_torchscript_tensors

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
NORM_FIELDS = ("weight", "bias", "running_mean", "running_var")  # a BatchNorm's tensors
Shape = tuple[int, ...]


class ConversionError(InvalidInput):
    """A weights file is unreadable or does not hold the published model a converter expects."""


@dataclass(frozen=True)
class Unused:
    """Source keys (a regular expression matching whole keys) a converter drops, and why."""

    pattern: str
    reason: str

    def matches(self, key: str) -> bool:
        return re.fullmatch(self.pattern, key) is not None


def read_torch_file(path: str | Path) -> Any:
    """The object in a torch file, loaded with ``weights_only=True`` (tensors and containers)."""
    path = _existing(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as error:  # a damaged file can fail anywhere in torch's readers
        raise ConversionError(
            f"{path} is not a readable torch file ({root_cause(error)}); it may be truncated: "
            "download it again"
        ) from None


def read_pickle_file(path: str | Path) -> Any:
    """The object in a legacy weights pickle (see :mod:`masn.unpickle`)."""
    path = _existing(path)
    try:
        return load_pickle(path)
    except UnsafePickleError:
        raise
    except pickle.UnpicklingError as error:
        raise ConversionError(str(error)) from None


def read_torchscript_file(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a TorchScript archive's module tree, by attribute path (see
    :func:`masn.unpickle.load_torchscript_tensors`: the archive's code is never run)."""
    path = _existing(path)
    try:
        return load_torchscript_tensors(path)
    except UnsafePickleError:
        raise
    except pickle.UnpicklingError as error:
        raise ConversionError(str(error)) from None


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"no weights file at {path}: download it first")
    return path


def state_dict_in(path: Path, loaded: Any, model: str) -> Mapping[str, Any]:
    """``loaded`` when it is a state dict (a dictionary of tensors by name)."""
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path} is not {model}: it holds no state dict")
    return loaded


def entry(path: Path, loaded: Any, key: str, model: str) -> Mapping[str, Any]:
    """The dictionary stored under ``key`` of a checkpoint's top-level dictionary."""
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get(key), Mapping):
        found = sorted(map(str, loaded)) if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ConversionError(f"{path} is not {model}: it has no {key!r} dictionary ({found})")
    ignored = sorted(str(k) for k in loaded if k != key)
    if ignored:
        log.debug("%s: ignoring top-level entries %s (not model weights)", path.name, ignored)
    return loaded[key]


def _as_tensor(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if not (value.flags.writeable and value.flags.c_contiguous):
            value = np.array(value, order="C")
        return torch.from_numpy(value)
    return value


class SourceTensors:
    """The tensors of one published file, each taken at most once against its expected shape.

    model: what the file should be, for messages ("the ... of ..."); unused: the documented
    source keys the converter drops.
    """

    def __init__(
        self, path: Path, tensors: Mapping[str, Any], model: str, unused: Iterable[Unused]
    ):
        self.path = path
        self.model = model
        self.unused = tuple(unused)
        self._left = {str(key): _as_tensor(value) for key, value in tensors.items()}

    def _fail(self, problem: str) -> ConversionError:
        return ConversionError(f"{self.path} is not {self.model}: {problem}")

    def __contains__(self, key: str) -> bool:
        return key in self._left

    def take(self, key: str, shape: Shape) -> Tensor:
        """The tensor under ``key``, which must have ``shape``; floats come back as float32."""
        if key not in self._left:
            raise self._fail(f"expected key {key!r} with shape {shape}, which the file lacks")
        value = self._left.pop(key)
        if not isinstance(value, Tensor):
            raise self._fail(
                f"expected key {key!r} with shape {shape}, found a {type(value).__name__}"
            )
        if tuple(value.shape) != tuple(shape):
            raise self._fail(
                f"expected key {key!r} with shape {shape}, found shape {tuple(value.shape)}"
            )
        return value.float() if value.is_floating_point() else value

    def conv_norm(self, conv: str, norm: str, shape: Shape, prefix: str = "") -> StateDict:
        """A convolution's weight and its BatchNorm under their own names after ``prefix`` (where
        our module keeps the file's network, e.g. "backbone.").

        A BatchNorm batch counter (``num_batches_tracked``) the file lacks (torchvision V1,
        Tushar-N's conversion) is filled with 0, as a strict load into our BatchNorm needs it.
        """
        taken = {f"{prefix}{conv}.weight": self.take(f"{conv}.weight", shape)}
        for field in NORM_FIELDS:
            taken[f"{prefix}{norm}.{field}"] = self.take(f"{norm}.{field}", shape[:1])
        counter = f"{norm}.num_batches_tracked"
        taken[f"{prefix}{counter}"] = self.take(counter, ()) if counter in self else torch.tensor(0)
        return taken

    def finish(self) -> None:
        """Checks that every tensor not taken is documented as unused, and logs what is dropped."""
        dropped: dict[str, list[str]] = defaultdict(list)
        unexpected = []
        for key in self._left:
            reason = next((u.reason for u in self.unused if u.matches(key)), None)
            if reason is None:
                unexpected.append(key)
            else:
                dropped[reason].append(key)
        if unexpected:
            value = self._left[unexpected[0]]
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            raise self._fail(f"unexpected key {unexpected[0]!r} ({shape}){more}")
        for reason, keys in dropped.items():
            log.info(
                "%s: dropping %d unused tensors (%s): %s",
                self.path.name,
                len(keys),
                reason,
                _summary(keys),
            )
        self._left.clear()


def _summary(keys: list[str], shown: int = 3) -> str:
    head = ", ".join(keys[:shown])
    return head if len(keys) <= shown else f"{head}, ... ({len(keys)} in all)"
