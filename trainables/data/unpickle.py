"""Unpickling that runs no code: numpy arrays and plain containers only (MNIST's and CIFAR's pickles)."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from trainables.errors import DataError


def _numpy_reconstruct() -> Callable[..., np.ndarray]:
    try:  # numpy >= 2
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return multiarray._reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and plain containers) only; any other global is a DataError.

    Enough for pickles of ndarrays written by numpy 1.x or 2.x with protocol 2-4.
    """

    _ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        # Protocol 2 pickles from Python 3 carry array bytes as codecs.encode(str, "latin1").
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise DataError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return resolve()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding != "latin1":
        raise DataError(f"refusing to unpickle codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")
