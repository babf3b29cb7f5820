"""Expanding a sweep config into trial specs (grid axes × widths × seeds), derived from the spec's fields."""

from __future__ import annotations

from orchestrator.config.sweep_config import SweepConfig
from trainables.data.datasets import normalization
from trainables.spec import TrialSpec, training_fields


def expand_grid(config: SweepConfig) -> list[TrialSpec]:
    """One spec per (grid combination, width config, seed): combination-major, then width-major, so
    that the seeds of one configuration sit together.

    Every training field but the seed and widths comes from the combination's config field of the
    same name (:func:`trainables.spec.training_fields`); the normalisation from the dataset.
    """
    specs = []
    for combination in config.configurations:
        mean, std = normalization(combination.dataset)
        shared = {name: getattr(combination, name) for name in training_fields()}
        specs.extend(
            TrialSpec(**shared, data_mean=mean, data_std=std, widths=widths, seed=seed)
            for widths in combination.widths
            for seed in combination.seeds
        )
    return specs
