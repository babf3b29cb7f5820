"""``layerswap analyze``: measure stored networks (new kinds, more draws) without training.

Which networks: every complete trial of the store, or of one sweep. Which
keys: the plans the sweeps' stored configs asked for (their union), or the
kinds and draws given on the command line. Only keys a network lacks are
measured; a second run measures nothing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from orchestrator.config import Resources
from orchestrator.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from orchestrator.launch import check_store_reachable
from orchestrator.listing import load_contents, recorded_plans
from orchestrator.measuring import AnalysisOutcome, missing_measurements, run_measurements
from orchestrator.progress import print_line
from trainables.datasets import load_dataset
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store, StoreError

Log = Callable[[str], None]


def analysis_plan(
    store: Store, sweeps: list[str], swaps: tuple[str, ...] | None, draws: int | None
) -> MeasurementPlan:
    """The plan to measure: ``swaps``/``draws`` where given, else what the sweeps recorded."""
    recorded = [plan for name, plan in recorded_plans(store).items() if name in sweeps]
    plan = functools.reduce(MeasurementPlan.union, recorded) if recorded else MeasurementPlan()
    return MeasurementPlan(
        plan.swaps if swaps is None else swaps,
        plan.rerandomize_draws if draws is None else draws,
    )


def analyze_store(
    store: Store,
    sweep: str | None = None,
    swaps: tuple[str, ...] | None = None,
    draws: int | None = None,
    resources: Resources | None = None,
    address: str | None = None,
    shared_fs: bool = False,
    log: Log = print_line,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> AnalysisOutcome:
    """Measure the keys the complete networks of ``store`` (or of ``sweep``) lack."""
    if store.version() is None:
        raise StoreError(f"{store.uri} is not a layerswap store (no index/trials)")
    store.check_writable()
    store.require_writable_version("analyze")
    contents = load_contents(store, sweep)
    specs = {
        trial_id: TrialSpec.from_dict(json.loads(spec_json))
        for trial_id, spec_json in zip(
            contents.trials.column("trial_id").to_pylist(),
            contents.trials.column("spec_json").to_pylist(),
            strict=True,
        )
    }
    plan = analysis_plan(store, [s.sweep for s in contents.sweeps], swaps, draws)
    datasets = {name: load_dataset(name) for name in sorted({spec.dataset for spec in specs.values()})}
    jobs = missing_measurements(store, specs.values(), plan, datasets)
    log(
        f"analyze: {len(specs)} networks, {len(jobs)} to measure "
        f"({sum(len(job.keys) for job in jobs)} new rows; swaps {', '.join(plan.swaps)}, "
        f"{plan.rerandomize_draws} draw(s)); store {store.uri}"
    )
    if jobs:
        connect_ray(address, connect_timeout_s)
        check_store_reachable(store, shared_fs)
    return run_measurements(store, jobs, datasets, resources or Resources(), log)
