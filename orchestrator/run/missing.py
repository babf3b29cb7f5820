"""What stored networks lack: the swap keys, weight-movement files and criticality layers a plan
asks for that are not in the store yet. Torch is imported only when there are stored networks
to look at, so a sweep of new networks plans without it.

The driver reads what each network already has (one read of the swaps and of the
criticality index, one listing of the layers index) and makes one
:class:`MeasurementJob` per network that lacks anything (:mod:`orchestrator.run.measuring`
runs them). A second run finds nothing missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from trainables.data.tensors import DatasetArrays
from trainables.measure.row_keys import CriticalityKey, Missing, criticality_key, criticality_row_key
from trainables.plan import DEFAULT_GROUPS, SWAP_KINDS, MeasurementPlan, SwapKey, row_key
from trainables.spec import TrialSpec
from trainables.store import Store


@dataclass(frozen=True)
class MeasurementJob:
    """One network and what it lacks."""

    spec: TrialSpec
    missing: Missing

    @property
    def keys(self) -> tuple[SwapKey, ...]:
        return self.missing.keys


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


def diverged_trial_ids(store: Store) -> set[str]:
    """Trial ids whose trial row says the network diverged: there is no trained network to measure."""
    trials = store.read_index("trials")
    return {
        trial_id for trial_id, status in zip(
            trials.column("trial_id").to_pylist(), trials.column("status").to_pylist(), strict=True
        ) if status == "diverged"
    }


def with_movement(store: Store) -> set[str]:
    """Trial ids whose weight-movement file (``index/layers/<trial_id>.parquet``) exists."""
    return store.index_trial_ids("layers")


def lacking_movement(
    spec: TrialSpec, units: tuple[str, ...], moved: set[str], measured: dict[str, set[str]] | None
) -> tuple[str, ...]:
    """The names of ``units`` (layers, then groups) whose movement ``spec``'s network lacks: all
    of them without its movement file (``moved``: the trial ids that have one), else those with no
    row in ``measured`` (the names each trial has rows for; None: single layers only were asked
    for, and a movement file holds every layer)."""
    if spec.trial_id not in moved:
        return units
    if measured is None:
        return ()
    have = measured.get(spec.trial_id, set())
    return tuple(name for name in units if name not in have)


def missing_measurements(
    store: Store, specs: Iterable[TrialSpec], plan: MeasurementPlan, datasets: dict[str, DatasetArrays]
) -> list[MeasurementJob]:
    """For each network of ``specs``, what ``plan`` asks that it does not have yet (if anything):
    swap keys, weight movement (always wanted) and criticality (if ``plan`` asks) of its layers and
    of the groups ``plan`` asks for.
    A network that diverged lacks nothing: it has nothing to measure."""
    from trainables.measure.stored import wanted  # builds each network's structure: imports torch

    diverged = diverged_trial_ids(store)
    unique = {spec.trial_id: spec for spec in specs}
    specs = [spec for trial_id, spec in unique.items() if trial_id not in diverged]
    ids = [spec.trial_id for spec in specs]
    have: dict[str, set[SwapKey]] = stored_keys(store, "swaps", ids, row_key)
    moved = with_movement(store)
    measured = (
        stored_keys(store, "layers", ids, lambda row: row["layer"]) if plan.groups != DEFAULT_GROUPS else None
    )
    critical: dict[str, set[CriticalityKey]] = (
        stored_keys(store, "criticality", ids, criticality_row_key) if plan.criticality else {}
    )
    jobs = []
    for spec in specs:
        data = datasets[spec.dataset]
        asked = wanted(spec, plan, data.input_shape, data.n_classes)
        lacking = tuple(key for key in asked.keys if key not in have.get(spec.trial_id, set()))
        units = asked.units
        layers: tuple[str, ...] = ()
        if plan.criticality is not None:
            done = critical.get(spec.trial_id, set())
            n_train = len(data.y_train)
            layers = tuple(
                layer for layer in units if criticality_key(layer, plan.criticality, n_train) not in done
            )
        movement = lacking_movement(spec, units, moved, measured)
        missing = Missing(lacking, movement, layers, plan.criticality if layers else None)
        if missing:
            jobs.append(MeasurementJob(spec, missing))
    return jobs


def describe_jobs(jobs: list[MeasurementJob]) -> str:
    """E.g. ``2 to measure (6 new rows; movement of 2, criticality of 6 layers)``."""
    extra = []
    moving = sum(bool(job.missing.movement) for job in jobs)
    if moving:
        extra.append(f"movement of {moving}")
    critical = sum(len(job.missing.criticality_layers) for job in jobs)
    if critical:
        extra.append(f"criticality of {critical} layers")
    rows = sum(len(job.keys) for job in jobs)
    return f"{len(jobs)} to measure ({rows} new rows{'; ' + ', '.join(extra) if extra else ''})"


def describe_measurements(jobs: list[MeasurementJob], plan: MeasurementPlan) -> str:
    """What ``jobs`` will measure, and only that: e.g. ``swaps rerandomize (3 draws), movement,
    criticality 5x5 sigma_max=0.01 K=4 rtol=1.01 subset=1000``; "nothing" when no job is left."""
    kinds = {key[0] for job in jobs for key in job.keys}
    parts = []
    swaps = [kind for kind in ("none", *SWAP_KINDS) if kind in kinds]
    if swaps:
        text = f"swaps {', '.join(swaps)}"
        if "rerandomize" in kinds:
            text += f" ({plan.rerandomize_draws} draw{'s' if plan.rerandomize_draws != 1 else ''})"
        parts.append(text)
    levels = [level for level in plan.groups if level != "layer"]
    if levels and jobs:
        parts.append(f"groups {', '.join(levels)}")
    recalibrated = sorted({key[5] for job in jobs for key in job.keys} - {0})
    if recalibrated:
        parts.append(f"every swap again with BatchNorm statistics from {recalibrated[0]} training samples")
    if any(job.missing.movement for job in jobs):
        parts.append("movement")
    settings = next((job.missing.settings for job in jobs if job.missing.criticality_layers), None)
    if settings is not None:
        parts.append(f"criticality {settings.label()}")
    return ", ".join(parts) or "nothing"
