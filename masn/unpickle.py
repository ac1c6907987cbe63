"""Reads pickles without importing or running anything they name.

Unpickling calls whatever global a file names, so a tampered file could run ``os.system``.
:class:`RestrictedUnpickler` admits only the globals of an :class:`Allowed` set and stops at
any other with :class:`UnsafePickleError`. Three kinds of file come here:

- legacy weights pickles (Caffe2 / detectron2 ``.pkl``, Python 2 or 3): numpy arrays in plain
  containers (:func:`load_pickle`);
- whole-module checkpoints of the official MASN code (``torch.save(model)``, which
  ``weights_only=True`` rejects): classes of ``model`` and ``torch.nn`` become inert stand-ins
  that only keep their state, tensors are rebuilt by torch (:func:`load_module_pickle`,
  :func:`module_state_dict`);
- TorchScript archives (OpenAI's CLIP files), whose ``torch.jit.load`` would compile and run
  the archive's code: ``data.pkl`` is read with ``__torch__`` classes as stand-ins and tensors
  rebuilt from the archive's storages (:func:`load_torchscript_tensors`).
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch._utils
import torch.jit._pickle

from masn.errors import UserError, root_cause

Globals = Mapping[tuple[str, str], Any]


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The file names a global that its kind of file never needs; loading it could run code."""


class InertObject:
    """Stand-in for an instance of a class that is never imported: it only keeps its state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inert_arguments = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.inert_state = state


# ---------------------------------------------------------------- the named sets of globals

LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles of bytes use it (protocol < 3), latin1 only."""
    if encoding.lower() not in LATIN1:
        raise UnsafePickleError(f"it encodes text with the {encoding!r} codec, not latin1")
    return codecs.encode(text, encoding, errors)


def _numpy_module(name: str) -> Any:
    """numpy's ``_core`` submodule (numpy 2), or the ``core`` one of numpy 1."""
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


def _numpy_arrays() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_module("multiarray"), _numpy_module("numeric")
    admitted: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    # Files written by numpy 1 name numpy.core, those by numpy 2 numpy._core.
    for core in ("numpy.core", "numpy._core"):
        admitted[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        admitted[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        admitted[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return admitted


def _inert_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as pickled bound methods use it; only on stand-ins, and nothing is looked up."""
    if not isinstance(obj, InertObject):
        raise UnsafePickleError(f"getattr on a {type(obj).__name__}, which is not a model object")
    return InertObject(obj, name)


def _inert_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), restricted to stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base is not object:
        raise UnsafePickleError(f"reconstruction of {cls!r} from {base!r}")
    return cls.__new__(cls)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    # Backward hooks stored in a file are never attached.
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, OrderedDict(), metadata
    )


def _rebuild_tensor(storage, offset, size, stride):
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return torch.nn.Parameter(data, requires_grad)


@dataclass(frozen=True)
class StorageType:
    """What a TorchScript pickle's ``torch.<Type>Storage`` global stands for: an element type."""

    dtype: torch.dtype


STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ShortStorage": torch.int16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "BoolStorage": torch.bool,
}

# Plain containers (``__builtin__`` names of Python 2 pickles are read as ``builtins``).
CONTAINERS: Globals = {
    ("collections", "OrderedDict"): OrderedDict,
    **{("builtins", t.__name__): t for t in (set, frozenset, complex, bytearray)},
}
NUMPY_ARRAYS: Globals = _numpy_arrays()
TORCH_TENSORS: Globals = {
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("torch", n): v for n, v in vars(torch).items() if isinstance(v, torch.dtype)},
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
# What pickled instances of stand-in classes may need besides the classes.
STAND_IN_SUPPORT: Globals = {
    ("builtins", "object"): object,
    ("builtins", "getattr"): _inert_getattr,
    ("copyreg", "_reconstructor"): _inert_reconstructor,
}
# TorchScript's typed containers (torch's own functions, which return their argument) and the
# element types of its storages.
TORCHSCRIPT_VALUES: Globals = {
    **{
        ("torch.jit._pickle", name): getattr(torch.jit._pickle, name)
        for name in (
            "restore_type_tag",
            "build_intlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
        )
    },
    **{("torch", name): StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


@dataclass(frozen=True)
class Allowed:
    """What one kind of file may name: ``admitted`` globals, and the namespaces whose classes
    become :class:`InertObject` stand-ins. ``kind`` names the file kind in messages."""

    kind: str
    admitted: Globals
    inert_namespaces: tuple[str, ...] = ()

    def stands_in(self, module: str) -> bool:
        return any(module == ns or module.startswith(ns + ".") for ns in self.inert_namespaces)


LEGACY_WEIGHTS = Allowed("a weights pickle", {**CONTAINERS, **NUMPY_ARRAYS})
MODULE_CHECKPOINT = Allowed(
    "an official MASN checkpoint",
    {**CONTAINERS, **TORCH_TENSORS, **STAND_IN_SUPPORT},
    ("model", "torch.nn"),
)
TORCHSCRIPT = Allowed(
    "a TorchScript weights archive",
    {**CONTAINERS, **TORCH_TENSORS, **TORCHSCRIPT_VALUES},
    ("__torch__",),
)

# Python 2 names that protocol-2 pickles use for the same modules.
PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals ``allowed`` admits (any other raises
    :class:`UnsafePickleError`); each class of its inert namespaces becomes a stand-in."""

    def __init__(self, file: BinaryIO, allowed: Allowed, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.allowed = allowed
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (PY2_MODULES.get(module, module), name)
        if key in self.allowed.admitted:
            return self.allowed.admitted[key]
        if self.allowed.stands_in(key[0]) and name.isidentifier():
            if key not in self._stand_ins:
                attributes = {"__module__": key[0], "__qualname__": name}
                self._stand_ins[key] = type(name, (InertObject,), attributes)
            return self._stand_ins[key]
        raise UnsafePickleError(
            f"it references {module}.{name}, which {self.allowed.kind} never needs; "
            "unpickling it could run code"
        )


# ---------------------------------------------------------------- legacy weights pickles


def load_pickle(path: str | Path) -> Any:
    """Unpickles a legacy weights file, admitting numpy arrays and plain containers only.

    Raises :class:`UnsafePickleError` for any other global, and :class:`pickle.UnpicklingError`
    for a file that is truncated or not a pickle; both messages name the file.
    """
    path = Path(path)
    damaged = "{path} is truncated or not a pickle ({cause}); download it again"
    with _reading(path, damaged), path.open("rb") as file:
        return RestrictedUnpickler(file, LEGACY_WEIGHTS, encoding="latin1").load()


@contextlib.contextmanager
def _reading(path: Path, damaged: str | None = None) -> Iterator[None]:
    """Names ``path`` in a refusal. With ``damaged`` (a message with ``{path}`` and ``{cause}``),
    any failure but an OS or memory error is a damaged file: a damaged pickle or archive can
    fail in any of the reader's steps."""
    try:
        yield
    except UnsafePickleError as error:
        raise UnsafePickleError(f"refusing to load {path}: {error}") from None
    except (OSError, MemoryError):
        raise
    except Exception as error:
        if damaged is None:
            raise
        cause = root_cause(error)
        raise pickle.UnpicklingError(damaged.format(path=path, cause=cause)) from None


# ---------------------------------------------------------------- official module checkpoints


class _CheckpointUnpickler(RestrictedUnpickler):
    """The unpickler ``torch.load`` subclasses (it adds its storages and storage types)."""

    def __init__(self, file: BinaryIO, **kwargs: Any):
        super().__init__(file, MODULE_CHECKPOINT, **kwargs)


def _load_checkpoint(file: BinaryIO, **kwargs: Any) -> Any:
    return _CheckpointUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module: Unpickler, load and a name.
_CHECKPOINT_PICKLE = types.ModuleType("masn_checkpoint_pickle")
_CHECKPOINT_PICKLE.Unpickler = _CheckpointUnpickler
_CHECKPOINT_PICKLE.load = _load_checkpoint


def load_module_pickle(path: str | Path) -> Any:
    """Unpickles a ``torch.save`` file (zip or legacy) with stand-ins for model classes.

    Raises :class:`UnsafePickleError` (naming the file) for any other global.
    """
    with _reading(Path(path)):
        return torch.load(
            path, map_location="cpu", pickle_module=_CHECKPOINT_PICKLE, weights_only=False
        )


def module_state_dict(obj: Any) -> OrderedDict[str, torch.Tensor]:
    """The state dict of an unpickled module tree (parameters and persistent buffers)."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(obj, "", state)
    return state


def _collect(obj: Any, prefix: str, state: OrderedDict[str, torch.Tensor]) -> None:
    attributes = getattr(obj, "__dict__", {})
    skipped = attributes.get("_non_persistent_buffers_set", set())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (attributes.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor) and name not in skipped:
                state[prefix + name] = tensor.detach()
    for name, child in (attributes.get("_modules") or {}).items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", state)


# ---------------------------------------------------------------- TorchScript archives


class _ArchiveStorages:
    """The storages of a TorchScript archive, read on demand from ``<root>/data/<key>``."""

    def __init__(self, archive: zipfile.ZipFile, root: str):
        self.archive = archive
        self.root = root
        self._read: dict[str, torch.storage.TypedStorage] = {}

    def __call__(self, saved_id: Any) -> torch.storage.TypedStorage:
        """The storage a persistent id ``("storage", type, key, location, numel)`` names."""
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}")
        _, kind, key, _, numel = saved_id
        if not (isinstance(kind, StorageType) and isinstance(key, str) and isinstance(numel, int)):
            raise pickle.UnpicklingError(f"unexpected storage id {saved_id!r}")
        if key not in self._read:
            self._read[key] = self._storage(key, kind.dtype, numel)
        return self._read[key]

    def _storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.storage.TypedStorage:
        record = f"{self.root}/data/{key}"
        size = self.archive.getinfo(record).file_size  # KeyError: the storage is missing
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if size != expected:
            raise pickle.UnpicklingError(
                f"storage {key} holds {size} bytes where {numel} {dtype} values take {expected}"
            )
        if numel == 0:
            flat = torch.empty(0, dtype=dtype)
        else:
            flat = torch.frombuffer(bytearray(self.archive.read(record)), dtype=dtype)
        return torch.storage.TypedStorage(
            wrap_storage=flat.untyped_storage(), dtype=dtype, _internal=True
        )


def _archive_root(archive: zipfile.ZipFile) -> str:
    """The folder of the archive's ``data.pkl`` (TorchScript archives hold one top folder)."""
    roots = [name[: -len("/data.pkl")] for name in archive.namelist() if name.endswith("/data.pkl")]
    roots = [root for root in roots if "/" not in root]
    if len(roots) != 1 or f"{roots[0]}/constants.pkl" not in archive.namelist():
        raise pickle.UnpicklingError("no <folder>/data.pkl with constants.pkl beside it")
    byteorder = f"{roots[0]}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
        raise pickle.UnpicklingError("its tensors are stored big-endian")
    return roots[0]


def load_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a TorchScript archive's module tree, by attribute path
    (``visual.conv1.weight``): parameters, buffers and tensor attributes alike.

    Reads ``data.pkl`` with the restricted unpickler: ``__torch__`` classes become stand-ins,
    tensors are rebuilt from the archive's storages, and the archive's code is never read.
    Raises :class:`UnsafePickleError` for any other global and :class:`pickle.UnpicklingError`
    for a damaged archive; both messages name the file.
    """
    path = Path(path)
    damaged = (
        "{path} is not a readable TorchScript archive ({cause}); it may be truncated: "
        "download it again"
    )
    with _reading(path, damaged), zipfile.ZipFile(path) as archive:
        root = _archive_root(archive)
        with archive.open(f"{root}/data.pkl") as file:
            unpickler = RestrictedUnpickler(file, TORCHSCRIPT)
            unpickler.persistent_load = _ArchiveStorages(archive, root)
            module = unpickler.load()
    if not isinstance(module, InertObject):
        raise pickle.UnpicklingError(f"{path} holds no TorchScript module")
    tensors: dict[str, torch.Tensor] = {}
    _collect_attributes(module, "", tensors, (id(module),))
    return tensors


def _collect_attributes(
    obj: InertObject, prefix: str, tensors: dict[str, torch.Tensor], path: tuple[int, ...]
) -> None:
    """Tensors under every path, as a state dict lists a shared module under each parent;
    ``path`` (the ids of the objects above) stops a module that contains itself."""
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + name] = value.detach()
        elif isinstance(value, InertObject) and id(value) not in path:
            _collect_attributes(value, f"{prefix}{name}.", tensors, (*path, id(value)))
