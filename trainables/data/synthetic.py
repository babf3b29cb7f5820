"""Small generated datasets for tests: ``synthetic`` (vectors) and ``synthetic-images`` (3x8x8
images), Gaussian clusters with several clusters per class, standardised when generated."""

from __future__ import annotations

import numpy as np

from trainables.data.catalog import CATALOG
from trainables.data.tensors import DatasetArrays

_SYNTH_FEATURES = 20
_SYNTH_CLASSES = 4
_SYNTH_CLUSTERS_PER_CLASS = 3
_SYNTH_TRAIN, _SYNTH_TEST = 1024, 512
_SYNTH_SEED = 20190101
_SYNTH_SPREAD = 1.0
"""Std of cluster centres around the origin, in units of the within-cluster noise."""

_IMAGES_TRAIN, _IMAGES_TEST = 384, 256
_IMAGES_SEED = 20220101
_IMAGES_SPREAD = 2.0
"""Std of the smoothed cluster templates, in units of the per-pixel noise."""


def synthetic() -> DatasetArrays:
    """Gaussian clusters (several per class), standardised with the training statistics."""
    rng = np.random.default_rng(_SYNTH_SEED)
    n_clusters = _SYNTH_CLASSES * _SYNTH_CLUSTERS_PER_CLASS
    centres = rng.normal(0.0, _SYNTH_SPREAD, size=(n_clusters, _SYNTH_FEATURES))
    n = _SYNTH_TRAIN + _SYNTH_TEST
    cluster = rng.integers(0, n_clusters, size=n)
    x = centres[cluster] + rng.normal(0.0, 1.0, size=(n, _SYNTH_FEATURES))
    y = (cluster % _SYNTH_CLASSES).astype(np.int64)
    train = slice(0, _SYNTH_TRAIN)
    x = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    return _arrays("synthetic", x.astype(np.float32), y, _SYNTH_TRAIN)


def synthetic_images() -> DatasetArrays:
    """3x8x8 images: per cluster a smooth random template (a 3x3 box filter over noise) plus
    per-pixel noise; standardised per channel with the training statistics."""
    info = CATALOG["synthetic-images"]
    rng = np.random.default_rng(_IMAGES_SEED)
    n_clusters = info.n_classes * _SYNTH_CLUSTERS_PER_CLASS
    noise = rng.normal(0.0, 1.0, size=(n_clusters, *info.input_shape))
    padded = np.pad(noise, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap")
    side = info.input_shape[1]
    smooth = sum(padded[:, :, i : i + side, j : j + side] for i in range(3) for j in range(3)) / 9.0
    templates = _IMAGES_SPREAD * smooth / smooth.std()
    n = _IMAGES_TRAIN + _IMAGES_TEST
    cluster = rng.integers(0, n_clusters, size=n)
    x = templates[cluster] + rng.normal(0.0, 1.0, size=(n, *info.input_shape))
    y = (cluster % info.n_classes).astype(np.int64)
    train = x[:_IMAGES_TRAIN]
    x = (x - train.mean(axis=(0, 2, 3), keepdims=True)) / train.std(axis=(0, 2, 3), keepdims=True)
    return _arrays("synthetic-images", x.astype(np.float32), y, _IMAGES_TRAIN)


def _arrays(name: str, x: np.ndarray, y: np.ndarray, n_train: int) -> DatasetArrays:
    info = CATALOG[name]
    return DatasetArrays(
        name=name,
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        n_classes=info.n_classes,
        mean=info.mean,
        std=info.std,
        pixel_scale=1.0,
    )
