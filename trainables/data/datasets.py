"""Datasets by name: their normalisation, where they live, and loading them as arrays.

MNIST and Fashion-MNIST come from the data root or the first source that works
(:mod:`trainables.data.sources`), CIFAR from the data root in torchvision's layout
(:mod:`trainables.data.cifar`); ``synthetic`` and ``synthetic-images`` are generated
in memory (:mod:`trainables.data.synthetic`). Images keep their shape (N, C, H, W).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainables.data.catalog import CATALOG, DATASETS, Normalization
from trainables.data.cifar import LAYOUTS as CIFAR_LAYOUTS
from trainables.data.cifar import import_archive, read_cifar
from trainables.data.sources import obtain
from trainables.data.synthetic import synthetic, synthetic_images
from trainables.data.tensors import DatasetArrays
from trainables.errors import DataError

_GENERATED = {"synthetic": synthetic, "synthetic-images": synthetic_images}


def normalization(name: str) -> tuple[Normalization, Normalization]:
    """(mean, std) applied after scaling raw values to [0, 1]; one number per channel for colour images."""
    _check_name(name)
    return CATALOG[name].mean, CATALOG[name].std


def default_data_root() -> Path:
    """``$LAYERSWAP_DATA`` if set, else ``~/.cache/layerswap/data``."""
    env = os.environ.get("LAYERSWAP_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "layerswap" / "data"


def prepare_dataset(
    name: str,
    root: Path | str | None = None,
    sources: Sequence[str] | None = None,
    archive: Path | str | None = None,
) -> str:
    """Make ``name`` available under ``root``; returns a one-line description of the source.

    ``sources`` limits the sources tried after the data root (default: ``$LAYERSWAP_DATA_SOURCES``,
    else all of :data:`trainables.data.sources.SOURCES`). ``archive``: a CIFAR archive to import
    (checked against its published MD5 first).
    """
    _check_name(name)
    if archive is not None:
        if name not in CIFAR_LAYOUTS:
            archived = ", ".join(CIFAR_LAYOUTS)
            raise DataError(f"--from: {name} is not imported from an archive; only {archived} are")
        return import_archive(name, Path(archive).expanduser(), _root(root))
    if name in _GENERATED:
        return f"{name}: generated in memory"
    if name in CIFAR_LAYOUTS:
        train, test = read_cifar(name, _root(root))
        folder = _root(root) / CIFAR_LAYOUTS[name].folder
        return f"{name}: {len(train[1])} training and {len(test[1])} test images in {folder}"
    _, description = obtain(name, _root(root), sources)
    return description


def load_dataset(
    name: str, root: Path | str | None = None, sources: Sequence[str] | None = None
) -> DatasetArrays:
    """Load ``name``, preparing it under ``root`` first if needed (see :func:`prepare_dataset`)."""
    _check_name(name)
    if name in _GENERATED:
        return _GENERATED[name]()
    if name in CIFAR_LAYOUTS:
        (x_train, y_train), (x_test, y_test) = read_cifar(name, _root(root))
    else:
        splits, _ = obtain(name, _root(root), sources)
        (x_train, y_train), (x_test, y_test) = splits["train"], splits["t10k"]
    info = CATALOG[name]
    return DatasetArrays(
        name=name,
        x_train=x_train.reshape(len(x_train), *info.input_shape),
        y_train=y_train.astype(np.int64),
        x_test=x_test.reshape(len(x_test), *info.input_shape),
        y_test=y_test.astype(np.int64),
        n_classes=info.n_classes,
        mean=info.mean,
        std=info.std,
        pixel_scale=255.0,
    )


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def _root(root: Path | str | None) -> Path:
    return default_data_root() if root is None else Path(root).expanduser()
