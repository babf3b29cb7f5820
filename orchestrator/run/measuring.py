"""Measuring stored networks without training: one Ray task per network that lacks anything.

The task (:func:`trainables.worker.measure_task.measure_network_task`) reads the
weights from the store and the dataset from Ray's object store, and writes one
new file per table it adds to; what each network lacks is
:mod:`orchestrator.run.missing`'s to say.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ray

from orchestrator.config.blocks import Resources
from orchestrator.config.sweep_config import MAX_RETRIES
from orchestrator.run.progress import HEARTBEAT_SECONDS, Log, ProgressLog, failed, finished, print_line
from trainables.data.tensors import DatasetArrays
from trainables.errors import StoreUnwritable, WeightsDamaged
from trainables.store import Store
from trainables.worker.work_times import WorkTimes

if TYPE_CHECKING:
    from orchestrator.run.missing import MeasurementJob  # imports torch


@dataclass(frozen=True)
class AnalysisOutcome:
    networks: int
    """Networks measured (those that lacked keys)."""
    rows: int
    failed: int
    wall_seconds: float
    damaged: int = 0
    """Of ``failed``, the networks not measured because a weights file does not match its index."""
    began: float = 0.0
    """When the tasks were submitted (Unix time; 0: none were)."""
    times: list[WorkTimes] = field(default_factory=list)
    """What each task reported of its time."""
    connected_here: bool = False
    """``layerswap analyze`` started or joined Ray (it was not running in this process before)."""


def run_measurements(
    store: Store,
    jobs: list[MeasurementJob],
    datasets: dict[str, DatasetArrays | ray.ObjectRef],
    resources: Resources,
    log: Log = print_line,
) -> AnalysisOutcome:
    """Run one Ray task per job (Ray must be connected); a line per network as it finishes.
    ``datasets`` may be in Ray's object store already (put once for a whole sweep)."""
    started, began = time.monotonic(), time.time()
    if not jobs:
        return AnalysisOutcome(0, 0, 0, 0.0)
    from trainables.worker.measure_task import measure_network_task  # imports torch

    data_refs = {name: in_object_store(datasets[name]) for name in {job.spec.dataset for job in jobs}}
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
    progress = ProgressLog("measured", len(jobs), log)
    rows = damaged = 0
    times: list[WorkTimes] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=HEARTBEAT_SECONDS)
        if not ready:
            if progress.heartbeat_due:
                progress.line(running=len(pending))
            continue
        job = pending.pop(ready[0])
        try:
            measured = ray.get(ready[0])
            progress.done += 1
            rows += measured.rows
            times.append(measured.times)
            event = finished(job.spec.trial_id, f"{measured.rows} rows")
        except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as err:
            progress.failed += 1
            cause = task_failure(err, list(pending))
            damaged += isinstance(cause, WeightsDamaged)
            event = failed(job.spec.trial_id, str(cause))
        progress.line(event)
    return AnalysisOutcome(
        progress.done, rows, progress.failed, time.monotonic() - started, damaged, began, times
    )


def task_failure(err: Exception, pending: list[ray.ObjectRef]) -> Exception | str:
    """What made a measurement task fail: a WeightsDamaged (that network's weights do not match their
    index) as it was raised, else the error's last line. A store that refuses writes for good (full,
    read-only) stops every task and is raised here: no other network could be written either."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, StoreUnwritable):
        for ref in pending:
            ray.cancel(ref)
        raise StoreUnwritable(str(cause)) from None
    if isinstance(cause, WeightsDamaged):
        return cause
    return str(err).strip().splitlines()[-1]


def in_object_store(value: DatasetArrays | ray.ObjectRef) -> ray.ObjectRef:
    """``value``'s reference in Ray's object store, putting it there if it is not yet."""
    return value if isinstance(value, ray.ObjectRef) else ray.put(value)
