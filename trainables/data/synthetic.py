"""``synthetic``: a small generated dataset for tests (Gaussian clusters, several per class)."""

from __future__ import annotations

import numpy as np

from trainables.data.tensors import DatasetArrays

SYNTHETIC_NORMALIZATION = (0.0, 1.0)
"""(mean, std) recorded in a synthetic spec: the features are standardised when generated."""
_SYNTH_FEATURES = 20
_SYNTH_CLASSES = 4
_SYNTH_CLUSTERS_PER_CLASS = 3
_SYNTH_TRAIN, _SYNTH_TEST = 1024, 512
_SYNTH_SEED = 20190101
_SYNTH_SPREAD = 1.0
"""Std of cluster centres around the origin, in units of the within-cluster noise."""



def synthetic() -> DatasetArrays:
    """Gaussian clusters (several per class), standardised with the training statistics."""
    rng = np.random.default_rng(_SYNTH_SEED)
    n_clusters = _SYNTH_CLASSES * _SYNTH_CLUSTERS_PER_CLASS
    centres = rng.normal(0.0, _SYNTH_SPREAD, size=(n_clusters, _SYNTH_FEATURES))
    n = _SYNTH_TRAIN + _SYNTH_TEST
    cluster = rng.integers(0, n_clusters, size=n)
    x = centres[cluster] + rng.normal(0.0, 1.0, size=(n, _SYNTH_FEATURES))
    y = (cluster % _SYNTH_CLASSES).astype(np.int64)
    train, test = slice(0, _SYNTH_TRAIN), slice(_SYNTH_TRAIN, n)
    x = (x - x[train].mean(axis=0)) / x[train].std(axis=0)
    x = x.astype(np.float32)
    mean, std = SYNTHETIC_NORMALIZATION
    return DatasetArrays(
        name="synthetic",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        n_classes=_SYNTH_CLASSES,
        mean=mean,
        std=std,
        pixel_scale=1.0,
    )
