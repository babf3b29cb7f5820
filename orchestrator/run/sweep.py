"""Running a sweep: plan it, start or join Ray, measure what trained networks lack, train the rest.

Each step is a module of its own: :mod:`orchestrator.run.sweep_plan` (what the sweep will
do), :mod:`orchestrator.run.budget` and :mod:`orchestrator.run.packing` (how networks are
packed into trials), :mod:`orchestrator.run.measuring` (Ray tasks) and
:mod:`orchestrator.run.tune_sweep` (Tune trials).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

from orchestrator.config.sweep_config import SweepConfig
from orchestrator.run.budget import MemoryBudget, cluster_budget, local_budget
from orchestrator.run.cluster import check_resources_fit, check_store_reachable, trial_slots
from orchestrator.run.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from orchestrator.run.factories import check_custom_model
from orchestrator.run.measuring import AnalysisOutcome, run_measurements
from orchestrator.run.packing import check_smallest_trials, make_packs, make_queues, pack_cost
from orchestrator.run.progress import Log, print_line
from orchestrator.run.sweep_plan import SweepPlan, plan_sweep, record_sweep
from orchestrator.run.tune_sweep import Queue, train_queues
from orchestrator.wandb.settings import resolve_wandb


@dataclass(frozen=True)
class SweepOutcome:
    """``total`` networks in the grid, ``skipped`` already trained, ``completed`` and
    ``failed`` of the rest; ``measured``: the measurement of already trained networks."""

    store_uri: str
    total: int
    skipped: int
    completed: int
    failed: int
    wall_seconds: float
    measured: AnalysisOutcome = AnalysisOutcome(0, 0, 0, 0.0)


def run_sweep(
    config: SweepConfig,
    address: str | None = None,
    shared_fs: bool = False,
    log: Log = print_line,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> SweepOutcome:
    """Train every network of ``config`` not yet in the store; measure the rest's missing keys.

    A network already trained (its trial row exists) is never trained again:
    if ``config``'s plan asks for keys it lacks, only those are measured, from
    its stored weights. The store is opened and its writability probed before
    Ray starts; joining ``address`` gives up after ``connect_timeout_s`` seconds.
    """
    started = time.perf_counter()
    wandb_settings = resolve_wandb(config.wandb)  # before Ray starts: a missing API key is one line
    factory_modules = check_custom_model(config)  # a custom model's factory: checked, shipped to workers
    plan = plan_sweep(config)
    log(plan.header)
    budget = local_trial_budget(plan, address, log)  # this machine's memory: refused before Ray starts
    if plan.todo or plan.jobs:
        join_cluster(plan, address, shared_fs, connect_timeout_s, factory_modules)
    queues = plan_queues(plan, address, budget, log) if plan.todo else []
    record_sweep(plan)
    measured = run_measurements(plan.store, plan.jobs, plan.datasets, config.resources, log)
    completed = train_queues(plan, queues, wandb_settings, log) if queues else 0
    skipped = len(plan.specs) - len(plan.todo)
    return SweepOutcome(
        plan.store.uri, len(plan.specs), skipped, completed, len(plan.todo) - completed,
        time.perf_counter() - started, measured,
    )


def local_trial_budget(plan: SweepPlan, address: str | None, log: Log) -> MemoryBudget | None:
    """On this machine (no ``address``), one trial's memory budget; the sweep is refused when its
    smallest trials cannot fit it. None when nothing is trained here or the budget is unknown."""
    if not plan.todo or address is not None:
        return None
    budget = local_budget(plan.config.resources, log)
    check_smallest_trials(plan.config, plan.datasets[plan.config.dataset], budget)
    return budget


def join_cluster(
    plan: SweepPlan, address: str | None, shared_fs: bool, connect_timeout_s: float,
    py_modules: list[ModuleType] | None = None,
) -> None:
    """Start or join Ray (the store's credentials set in every worker, ``py_modules`` importable in
    every worker), and check that the store is reachable from every node and, on this machine, that
    a trial's resources exist."""
    connect_ray(address, connect_timeout_s, plan.credentials, py_modules)
    check_store_reachable(plan.store, shared_fs)
    if address is None:
        check_resources_fit(plan.config.resources)


def plan_queues(plan: SweepPlan, address: str | None, budget: MemoryBudget | None, log: Log) -> list[Queue]:
    """The networks to train in packs, the packs in queues (one per Tune trial) for the
    connected Ray's trial slots; on a cluster, sized for its smallest worker's memory."""
    config, data = plan.config, plan.datasets[plan.config.dataset]
    if address is not None:
        budget = cluster_budget(config.resources, log)
        check_smallest_trials(config, data, budget)
    slots = trial_slots(config.resources)
    packs = make_packs(config, plan.todo, data, slots, budget, log)
    queues = make_queues(packs, slots, [pack_cost(config, pack, data) for pack in packs])
    if len(queues) < len(packs):
        log(f"{len(packs)} packs in {len(queues)} Tune trials (queues of packs)")
    return queues
