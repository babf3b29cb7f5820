"""What a sweep will do: its networks and which are already trained (:func:`open_sweep`, before Ray
starts and without torch), what the trained ones still lack (:func:`plan_sweep`, while Ray starts),
and the sweep's record in the store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import SweepConfig
from trainables.data.datasets import load_dataset
from trainables.data.tensors import DatasetArrays
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.uri import split_credentials

if TYPE_CHECKING:
    from orchestrator.run.missing import MeasurementJob


@dataclass(frozen=True)
class SweepStart:
    """What a sweep knows before Ray starts: the opened (and probed) ``store``, the grid's
    networks (``specs``) and those not trained yet (``todo``)."""

    config: SweepConfig
    store: Store
    specs: list[TrialSpec]
    todo: list[TrialSpec]

    @property
    def credentials(self) -> dict[str, str]:
        """The store URI's credentials as the AWS environment variables every worker gets."""
        return split_credentials(self.store.location)[1]


@dataclass(frozen=True)
class SweepPlan:
    """The sweep's networks (``specs``), those to train (``todo``) and the measurement ``jobs``
    of those already trained, with the opened ``store`` and the loaded ``datasets``."""

    config: SweepConfig
    store: Store
    specs: list[TrialSpec]
    todo: list[TrialSpec]
    jobs: list[MeasurementJob]
    datasets: dict[str, DatasetArrays]
    credentials: dict[str, str]
    """The store URI's credentials as the AWS environment variables every worker gets."""

    @property
    def header(self) -> str:
        """The sweep's first line: what is in the grid and what will be done."""
        from orchestrator.run.missing import describe_jobs

        trained = len(self.specs) - len(self.todo)
        return (
            f"sweep {self.config.name}: {len(self.specs)} networks in the grid, {trained} already trained, "
            f"{len(self.todo)} to train, {describe_jobs(self.jobs)}; store {self.store.uri}"
        )


def open_sweep(config: SweepConfig) -> SweepStart:
    """Open the store (probing that it can be written, refusing a store of another version),
    expand the grid and find which networks are trained: fast, and without torch."""
    store = Store.open(config.store)
    if store.version() is not None:  # a directory that is no store, or a store of another version:
        store.require_writable_version("sweep")  # refused before anything is written or Ray starts
    store.check_writable()
    specs = expand_grid(config)
    finished = store.completed_trial_ids()
    return SweepStart(config, store, specs, [spec for spec in specs if spec.trial_id not in finished])


def plan_sweep(start: SweepStart) -> SweepPlan:
    """Load the datasets and find what the trained networks lack."""
    from orchestrator.run.missing import missing_measurements  # imports torch

    config, store, specs = start.config, start.store, start.specs
    todo_ids = {spec.trial_id for spec in start.todo}
    trained = [spec for spec in specs if spec.trial_id not in todo_ids]
    datasets = {name: load_dataset(name) for name in sorted({spec.dataset for spec in specs})}
    jobs: list[MeasurementJob] = (
        missing_measurements(store, trained, config.plan, datasets) if trained else []
    )
    return SweepPlan(config, store, specs, start.todo, jobs, datasets, start.credentials)


def sweep_record(config: SweepConfig, specs: list[TrialSpec], store_uri: str) -> tuple[str, bytes]:
    """The sweep's record (config and expected trial ids) and where it goes, named by its content hash;
    ``store_uri`` is the store as shown (credentials redacted: :attr:`Store.uri`)."""
    record = {
        "sweep": config.name,
        "config": {**config.to_raw(), "store": store_uri},
        "trial_ids": [spec.trial_id for spec in specs],
    }
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return layout.sweep_record_path(config.name, body), body


def record_sweep(plan: SweepPlan) -> None:
    """Once nothing can refuse the sweep: a new store's version marker, then the sweep's record."""
    plan.store.require_writable_version("sweep")
    relpath, record = sweep_record(plan.config, plan.specs, plan.store.uri)
    if not plan.store.exists(relpath):
        plan.store.write_bytes(relpath, record)
