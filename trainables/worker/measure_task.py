"""The Ray task ``layerswap analyze`` runs on a worker: measure what one stored network lacks.

The dataset arrives through Ray's object store and the weights are read from
the store, so a worker needs neither a local dataset nor the training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainables.data.tensors import DatasetArrays
from trainables.measure.row_keys import Missing
from trainables.measure.stored import measure_stored
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.train.device import make_deterministic, trial_device
from trainables.worker.quiet_exit import quiet_stops
from trainables.worker.work_times import Stopwatch, WorkTimes


@dataclass(frozen=True)
class MeasuredNetwork:
    """What a task measured: the ``rows`` it wrote and where its time went (``measure`` holds
    the reading of the weights, the measuring and the writing of the rows)."""

    rows: int
    times: WorkTimes


def measure_network_task(
    store_location: str, spec: dict[str, Any], missing: Missing, data: DatasetArrays, gpu_share: float,
    threads: int,
) -> MeasuredNetwork:
    """Measure what the network ``spec`` lacks (swap keys, movement, criticality) from its
    stored weights and write the rows."""
    quiet_stops()  # the raylet ends the job's workers with SIGTERM
    make_deterministic()
    torch.set_num_threads(max(1, threads))
    device = trial_device(gpu_share)
    trial = TrialSpec.from_dict(spec)
    tensors = data.tensors(device)
    times = WorkTimes()
    times.mark_ready()
    with Stopwatch(times, "measure"):
        rows = measure_stored(Store.open(store_location), trial, missing, tensors, device)
    times.mark_end()
    return MeasuredNetwork(rows, times)
