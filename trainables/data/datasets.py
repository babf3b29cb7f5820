"""Datasets by name: their normalisation, where they live, and loading them as arrays.

A dataset comes from the data root or the first source that works
(:mod:`trainables.data.sources`); ``synthetic`` is generated in memory
(:mod:`trainables.data.synthetic`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainables.choices import DATASETS
from trainables.data.sources import N_CLASSES, obtain
from trainables.data.synthetic import SYNTHETIC_NORMALIZATION, synthetic
from trainables.data.tensors import DatasetArrays
from trainables.errors import DataError

_NORMALIZATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    "synthetic": SYNTHETIC_NORMALIZATION,
}


def normalization(name: str) -> tuple[float, float]:
    """(mean, std) applied after scaling raw values to [0, 1]."""
    _check_name(name)
    return _NORMALIZATION[name]


def default_data_root() -> Path:
    """``$LAYERSWAP_DATA`` if set, else ``~/.cache/layerswap/data``."""
    env = os.environ.get("LAYERSWAP_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "layerswap" / "data"


def prepare_dataset(
    name: str, root: Path | str | None = None, sources: Sequence[str] | None = None
) -> str:
    """Make ``name`` available under ``root``; returns a one-line description of the source.

    ``sources`` limits the sources tried after the data root (default: ``$LAYERSWAP_DATA_SOURCES``,
    else all of :data:`trainables.data.sources.SOURCES`).
    """
    _check_name(name)
    if name == "synthetic":
        return "synthetic: generated in memory"
    _, description = obtain(name, _root(root), sources)
    return description


def load_dataset(
    name: str, root: Path | str | None = None, sources: Sequence[str] | None = None
) -> DatasetArrays:
    """Load ``name``, preparing it under ``root`` first if needed (see :func:`prepare_dataset`)."""
    _check_name(name)
    if name == "synthetic":
        return synthetic()
    splits, _ = obtain(name, _root(root), sources)
    mean, std = _NORMALIZATION[name]
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["t10k"]
    return DatasetArrays(
        name=name,
        x_train=x_train.reshape(len(x_train), -1),
        y_train=y_train.astype(np.int64),
        x_test=x_test.reshape(len(x_test), -1),
        y_test=y_test.astype(np.int64),
        n_classes=N_CLASSES,
        mean=mean,
        std=std,
        pixel_scale=255.0,
    )


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _root(root: Path | str | None) -> Path:
    return default_data_root() if root is None else Path(root).expanduser()
