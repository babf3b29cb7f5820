"""``layerswap analyze``: measure stored networks (new kinds, more draws, criticality) without training.

Which networks: every complete trial of the store, or of one sweep. Which
keys: the plans the sweeps' stored configs asked for (their union), or the
kinds and draws given on the command line; criticality when a config asked
for it or ``--criticality`` is given (with the settings it names, else the
recorded ones, else the defaults). Weight movement is measured for every network that lacks
it. Only what a network lacks is measured; a second run measures nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

from orchestrator.catalog.contents import load_contents, recorded_plans
from orchestrator.config.blocks import Resources
from orchestrator.run.claimed_work import work_claimed
from orchestrator.run.cluster import check_store_reachable
from orchestrator.run.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from orchestrator.run.factories import stored_factory_modules
from orchestrator.run.measuring import AnalysisOutcome, run_measurements
from orchestrator.run.missing import (
    MeasurementJob,
    describe_jobs,
    describe_measurements,
    missing_measurements,
)
from orchestrator.run.phases import Phases
from orchestrator.run.progress import Log, print_line
from trainables.data.datasets import load_dataset
from trainables.plan import CriticalitySettings, MeasurementPlan, ordered_groups
from trainables.spec import TrialSpec
from trainables.store import Store, StoreError
from trainables.store.claims import Claims


def analysis_plan(
    store: Store, sweeps: list[str], swaps: tuple[str, ...] | None, draws: int | None,
    criticality: bool | CriticalitySettings = False, recalibrate: int | None = None,
    groups: tuple[str, ...] | None = None,
) -> MeasurementPlan:
    """The plan to measure: ``swaps``/``draws``/``recalibrate``/``groups`` where given, else what the sweeps
    recorded; criticality with the settings ``criticality`` gives, else as recorded, else with the
    defaults if ``criticality`` is True and none was recorded."""
    recorded = [plan for name, plan in recorded_plans(store).items() if name in sweeps]
    plan = functools.reduce(MeasurementPlan.union, recorded) if recorded else MeasurementPlan()
    settings = plan.criticality
    if isinstance(criticality, CriticalitySettings):
        settings = criticality
    elif criticality and settings is None:
        settings = CriticalitySettings()
    return MeasurementPlan(
        plan.swaps if swaps is None else swaps,
        plan.rerandomize_draws if draws is None else draws,
        plan.alphas,
        settings,
        plan.recalibrate if recalibrate is None else recalibrate,
        plan.groups if groups is None else ordered_groups(groups),
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
    criticality: bool | CriticalitySettings = False,
    phases: Phases | None = None,
    recalibrate: int | None = None,
    groups: tuple[str, ...] | None = None,
) -> AnalysisOutcome:
    """Measure what the complete networks of ``store`` (or of ``sweep``) lack; ``phases`` (optional)
    gets the laps (:mod:`orchestrator.run.phases`)."""
    phases = phases if phases is not None else Phases(time.monotonic())
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
    plan = analysis_plan(store, [s.sweep for s in contents.sweeps], swaps, draws, criticality, recalibrate,
                         groups)
    datasets = {name: load_dataset(name) for name in sorted({spec.dataset for spec in specs.values()})}
    factory_modules = stored_factory_modules(specs.values())  # custom models: importable here and there
    jobs = missing_measurements(store, specs.values(), plan, datasets)
    log(
        f"analyze: {len(specs)} networks, {describe_jobs(jobs)}; measuring "
        f"{describe_measurements(jobs, plan)}; store {store.uri}"
    )
    phases.lap("plan")
    if not jobs:
        return AnalysisOutcome(0, 0, 0, 0.0)
    connected = connect_ray(address, connect_timeout_s, py_modules=factory_modules)
    check_store_reachable(store, shared_fs)
    phases.lap("ray")

    def measure(batch: list[MeasurementJob]) -> AnalysisOutcome:
        outcome = run_measurements(store, batch, datasets, resources or Resources(), log)
        phases.lap_work(outcome.began, outcome.times)
        return outcome

    with Claims(store) as claims:
        if claims.warning:
            log(claims.warning)
        work = work_claimed(
            store, claims, [], jobs, train=lambda specs: 0, measure=measure,
            lacking=lambda specs: missing_measurements(store, specs, plan, datasets), log=log,
        )
    return dataclasses.replace(work.measured, connected_here=connected)
