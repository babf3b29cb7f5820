"""Expanding a sweep config into trial specs (widths × seeds)."""

from __future__ import annotations

from orchestrator.config.sweep_config import SweepConfig
from trainables.data.datasets import normalization
from trainables.spec import TrialSpec


def expand_grid(config: SweepConfig) -> list[TrialSpec]:
    """One spec per (width config, seed), width-major so a width's seeds sit together."""
    mean, std = normalization(config.dataset)
    return [
        TrialSpec(
            dataset=config.dataset,
            data_mean=mean,
            data_std=std,
            model=config.model,
            widths=widths,
            seed=seed,
            epochs=config.epochs,
            batch_size=config.batch_size,
            optimizer=config.optimizer,
            checkpoints=config.checkpoints,
            precision=config.precision,
        )
        for widths in config.widths
        for seed in config.seeds
    ]
