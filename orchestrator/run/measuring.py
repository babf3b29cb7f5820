"""Measuring stored networks without training: what a plan asks that is missing, as Ray tasks.

The driver reads what each network already has (one read of the swaps and of
the criticality index, one listing of the layers index), works out what is
missing (swap keys, the weight-movement file, criticality layers), and runs
one Ray task per network that lacks anything: the task reads the weights from
the store and the dataset from Ray's object store, and writes one new file
per table it adds to. A second run finds nothing missing and measures nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import ray

from orchestrator.config.blocks import Resources
from orchestrator.config.sweep_config import MAX_RETRIES
from orchestrator.run.progress import format_elapsed, print_line
from trainables.data.tensors import DatasetArrays
from trainables.measure.stored import (
    CriticalityKey,
    Missing,
    criticality_key,
    criticality_row_key,
    network_layers,
    wanted_keys,
)
from trainables.plan import MeasurementPlan, SwapKey, row_key
from trainables.spec import TrialSpec
from trainables.store.store import Store
from trainables.worker.measure_task import measure_network_task

Log = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class MeasurementJob:
    """One network and what it lacks."""

    spec: TrialSpec
    missing: Missing

    @property
    def keys(self) -> tuple[SwapKey, ...]:
        return self.missing.keys


@dataclass(frozen=True)
class AnalysisOutcome:
    networks: int
    """Networks measured (those that lacked keys)."""
    rows: int
    failed: int
    wall_seconds: float


def stored_keys(
    store: Store, table: str, trial_ids: Iterable[str], key: Callable[[dict], Hashable]
) -> dict[str, set]:
    """The keys (``key`` of each row of index ``table``) each of ``trial_ids`` already has."""
    ids = pa.array(sorted(set(trial_ids)), pa.string())
    rows = store.read_index(table)
    rows = rows.filter(pc.is_in(rows.column("trial_id"), value_set=ids))
    keys: dict[str, set] = defaultdict(set)
    for row in rows.to_pylist():
        keys[row["trial_id"]].add(key(row))
    return keys


def with_movement(store: Store) -> set[str]:
    """Trial ids whose weight-movement file (``index/layers/<trial_id>.parquet``) exists."""
    return store.index_trial_ids("layers")


def missing_measurements(
    store: Store, specs: Iterable[TrialSpec], plan: MeasurementPlan, datasets: dict[str, DatasetArrays]
) -> list[MeasurementJob]:
    """For each network of ``specs``, what ``plan`` asks that it does not have yet (if anything):
    swap keys, its weight-movement file (always wanted), criticality layers (if ``plan`` asks)."""
    specs = list({spec.trial_id: spec for spec in specs}.values())
    ids = [spec.trial_id for spec in specs]
    have: dict[str, set[SwapKey]] = stored_keys(store, "swaps", ids, row_key)
    moved = with_movement(store)
    critical: dict[str, set[CriticalityKey]] = (
        stored_keys(store, "criticality", ids, criticality_row_key) if plan.criticality else {}
    )
    jobs = []
    for spec in specs:
        data = datasets[spec.dataset]
        wanted = wanted_keys(spec, plan, data.input_shape, data.n_classes)
        lacking = tuple(key for key in wanted if key not in have.get(spec.trial_id, set()))
        layers: tuple[str, ...] = ()
        if plan.criticality is not None:
            done = critical.get(spec.trial_id, set())
            n_train = len(data.y_train)
            layers = tuple(
                layer for layer in network_layers(spec, data.input_shape, data.n_classes)
                if criticality_key(layer, plan.criticality, n_train) not in done
            )
        missing = Missing(lacking, spec.trial_id not in moved, layers, plan.criticality if layers else None)
        if missing:
            jobs.append(MeasurementJob(spec, missing))
    return jobs


def describe_jobs(jobs: list[MeasurementJob]) -> str:
    """E.g. ``2 to measure (6 new rows; movement of 2, criticality of 6 layers)``."""
    extra = []
    moving = sum(job.missing.movement for job in jobs)
    if moving:
        extra.append(f"movement of {moving}")
    critical = sum(len(job.missing.criticality_layers) for job in jobs)
    if critical:
        extra.append(f"criticality of {critical} layers")
    rows = sum(len(job.keys) for job in jobs)
    return f"{len(jobs)} to measure ({rows} new rows{'; ' + ', '.join(extra) if extra else ''})"


def run_measurements(
    store: Store,
    jobs: list[MeasurementJob],
    datasets: dict[str, DatasetArrays],
    resources: Resources,
    log: Log = print_line,
) -> AnalysisOutcome:
    """Run one Ray task per job (Ray must be connected); a line per network as it finishes."""
    started = time.monotonic()
    if not jobs:
        return AnalysisOutcome(0, 0, 0, 0.0)
    data_refs = {name: ray.put(datasets[name]) for name in {job.spec.dataset for job in jobs}}
    task = ray.remote(measure_network_task).options(
        num_cpus=resources.cpu_per_trial, num_gpus=resources.gpu_per_trial, max_retries=MAX_RETRIES
    )
    threads = max(1, int(resources.cpu_per_trial))
    pending = {
        task.remote(
            store.location, job.spec.to_dict(), job.missing, data_refs[job.spec.dataset],
            resources.gpu_per_trial, threads,
        ): job
        for job in jobs
    }
    done = rows = failed = 0
    last_line = time.monotonic()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=HEARTBEAT_SECONDS)
        elapsed = format_elapsed(time.monotonic() - started)
        if not ready:
            if time.monotonic() - last_line >= HEARTBEAT_SECONDS:
                log(f"[{elapsed}] measured {done}/{len(jobs)}, running {len(pending)}, failed {failed}")
                last_line = time.monotonic()
            continue
        job = pending.pop(ready[0])
        try:
            written = ray.get(ready[0])
            done += 1
            rows += written
            detail = f"{written} rows"
        except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as err:
            failed += 1
            detail = f"FAILED: {str(err).strip().splitlines()[-1]}"
        log(f"[{elapsed}] measured {done}/{len(jobs)}, failed {failed} | {job.spec.trial_id} {detail}")
        last_line = time.monotonic()
    return AnalysisOutcome(done, rows, failed, time.monotonic() - started)
