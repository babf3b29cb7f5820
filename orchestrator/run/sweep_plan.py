"""What a sweep will do, worked out before Ray starts: its networks, which are already trained,
what the trained ones still lack, and the sweep's record in the store."""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import SweepConfig
from orchestrator.run.missing import MeasurementJob, describe_jobs, missing_measurements
from trainables.data.datasets import load_dataset
from trainables.data.tensors import DatasetArrays
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.uri import split_credentials


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
        trained = len(self.specs) - len(self.todo)
        return (
            f"sweep {self.config.name}: {len(self.specs)} networks in the grid, {trained} already trained, "
            f"{len(self.todo)} to train, {describe_jobs(self.jobs)}; store {self.store.uri}"
        )


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Open the store (probing that it can be written, refusing a store of another version),
    expand the grid, and find what is trained and what the trained networks lack."""
    store = Store.open(config.store)
    if store.version() is not None:  # a directory that is no store, or a store of another version:
        store.require_writable_version("sweep")  # refused before anything is written or Ray starts
    store.check_writable()
    specs = expand_grid(config)
    finished = store.completed_trial_ids()
    todo = [spec for spec in specs if spec.trial_id not in finished]
    trained = [spec for spec in specs if spec.trial_id in finished]
    datasets = {name: load_dataset(name) for name in sorted({spec.dataset for spec in specs})}
    jobs: list[MeasurementJob] = (
        missing_measurements(store, trained, config.plan, datasets) if trained else []
    )
    return SweepPlan(config, store, specs, todo, jobs, datasets, split_credentials(store.location)[1])


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
