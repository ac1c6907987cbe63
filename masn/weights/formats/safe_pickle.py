"""Reads legacy weight pickles (Caffe2 / detectron2 ``.pkl``) without running anything they name.

Those files are plain pickles of dicts of numpy arrays, written by Python 2's cPickle (protocol
2, byte strings decoded here as latin1) or by Python 3. Unpickling calls whatever global a file
names, so a tampered file could run ``os.system``; here only the few globals that rebuild numpy
arrays and plain containers are admitted, and any other stops the load with
:class:`UnsafePickleError`. Torch files never come here: they load with
``torch.load(path, map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from masn.errors import UserError, root_cause


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The file names a global that a weights file never needs; loading it could run code."""


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


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_module("multiarray"), _numpy_module("numeric")
    numpy_globals = {
        ("multiarray", "_reconstruct"): multiarray._reconstruct,
        ("multiarray", "scalar"): multiarray.scalar,
        ("numeric", "_frombuffer"): numeric._frombuffer,
    }
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): OrderedDict,
    }
    # Files written by numpy 1 name numpy.core, those by numpy 2 numpy._core.
    for (module, name), value in numpy_globals.items():
        allowed[(f"numpy.core.{module}", name)] = value
        allowed[(f"numpy._core.{module}", name)] = value
    # Python 2 pickles name the builtins module __builtin__.
    for builtin in (set, frozenset, complex, bytearray):
        allowed[("builtins", builtin.__name__)] = builtin
        allowed[("__builtin__", builtin.__name__)] = builtin
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _WeightsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"it references {module}.{name}; a weights file never needs it (only numpy "
                "arrays and plain containers are admitted), and unpickling it could run code"
            )
        return allowed


def load_pickle(path: str | Path) -> Any:
    """Unpickles a legacy weights file, admitting numpy arrays and plain containers only.

    Raises :class:`UnsafePickleError` for any other global, and :class:`pickle.UnpicklingError`
    for a file that is truncated or not a pickle; both messages name the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return _WeightsUnpickler(file, encoding="latin1").load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"refusing to load {path}: {error}") from None
    except (OSError, MemoryError):
        raise
    except Exception as error:  # a damaged pickle can fail in any of the unpickler's steps
        raise pickle.UnpicklingError(
            f"{path} is truncated or not a pickle ({root_cause(error)}); download it again"
        ) from None
