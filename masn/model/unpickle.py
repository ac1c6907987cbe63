"""Reads pickled whole-module checkpoints without importing or running anything they name.

The official MASN code saves ``torch.save(model)``: a pickle of the module object that names
the official classes (``model.masn.MASN``, ``model.modules.gcn.GCN``, ...) and torch.nn classes,
in torch's zip format or, from torch 1.x, the legacy non-zip format. ``weights_only=True`` rejects
such files, and plain unpickling would import and execute code named by the file. Here every
class of a model namespace becomes an inert stand-in that only records its state; tensors are
rebuilt by torch's own storage code (through ``torch.load``'s ``pickle_module`` hook); any other
global (``os.system``, ``builtins.eval``, ...) stops the load with :class:`UnsafeCheckpointError`.
"""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch._utils

from masn.errors import UserError

# Globals whose classes are replaced by inert stand-ins: the official MASN package and torch.nn.
INERT_NAMESPACES = ("model", "torch.nn")


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """The file names something a model checkpoint never needs; loading it could run code."""


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


def _inert_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as pickled bound methods use it; only on stand-ins, and nothing is looked up."""
    if not isinstance(obj, InertObject):
        raise UnsafeCheckpointError(
            f"getattr on a {type(obj).__name__}, which is not a model object"
        )
    return InertObject(obj, name)


def _inert_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), restricted to stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base is not object:
        raise UnsafeCheckpointError(f"reconstruction of {cls!r} from {base!r}")
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


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("builtins", "getattr"): _inert_getattr,
    ("copyreg", "_reconstructor"): _inert_reconstructor,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


# Python 2 names that protocol-2 pickles (torch's default) use for the same modules.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        key = (module, name)
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        inert = any(module == ns or module.startswith(ns + ".") for ns in INERT_NAMESPACES)
        if inert and name.isidentifier():
            if key not in self._stand_ins:
                attributes = {"__module__": module, "__qualname__": name}
                self._stand_ins[key] = type(name, (InertObject,), attributes)
            return self._stand_ins[key]
        raise UnsafeCheckpointError(
            f"it references {module}.{name}, which no MASN checkpoint contains; "
            "a pickle naming it may try to run code"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs of a pickle module: Unpickler, load and a name.
_PICKLE_MODULE = types.ModuleType("masn_restricted_pickle")
_PICKLE_MODULE.Unpickler = _RestrictedUnpickler
_PICKLE_MODULE.load = _restricted_load


def load_module_pickle(path: str | Path) -> Any:
    """Unpickles a ``torch.save`` file (zip or legacy) with stand-ins for model classes.

    Raises :class:`UnsafeCheckpointError` (naming the file) for any other global.
    """
    try:
        return torch.load(
            path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False
        )
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"refusing to load {path}: {error}") from None


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
