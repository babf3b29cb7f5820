"""Expanding a sweep config into trial specs (widths × seeds), derived from the spec's fields."""

from __future__ import annotations

from orchestrator.config.sweep_config import SweepConfig
from trainables.data.datasets import normalization
from trainables.spec import TrialSpec, training_fields


def expand_grid(config: SweepConfig) -> list[TrialSpec]:
    """One spec per (width config, seed), width-major so a width's seeds sit together.

    Every training field but the seed and widths comes from the config field of the same
    name (:func:`trainables.spec.training_fields`); the normalisation from the dataset.
    """
    mean, std = normalization(config.dataset)
    shared = {name: getattr(config, name) for name in training_fields()}
    return [
        TrialSpec(**shared, data_mean=mean, data_std=std, widths=widths, seed=seed)
        for widths in config.widths
        for seed in config.seeds
    ]
