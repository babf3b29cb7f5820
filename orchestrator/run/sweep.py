"""Running a sweep: plan it, start or join Ray, measure what trained networks lack, train the rest.

Each step is a module of its own: :mod:`orchestrator.run.sweep_plan` (what the sweep will
do), :mod:`orchestrator.run.budget` and :mod:`orchestrator.run.packing` (how networks are
packed into trials), :mod:`orchestrator.run.measuring` (Ray tasks) and
:mod:`orchestrator.run.tune_sweep` (Tune trials).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial

from orchestrator.catalog.naming import configuration_labels
from orchestrator.config.sweep_config import SweepConfig
from orchestrator.run.budget import MemoryBudget, cluster_budget, local_budget
from orchestrator.run.claimed_work import ClaimedOutcome, work_claimed
from orchestrator.run.cluster import check_resources_fit, check_store_reachable, trial_slots
from orchestrator.run.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from orchestrator.run.measuring import AnalysisOutcome, run_measurements
from orchestrator.run.missing import missing_measurements
from orchestrator.run.packing import (
    check_buildable,
    check_smallest_trials,
    make_packs,
    make_queues,
    pack_cost,
    pack_shape,
)
from orchestrator.run.progress import Log, print_line
from orchestrator.run.sweep_plan import SweepPlan, plan_sweep, record_sweep
from orchestrator.run.tune_sweep import Queue, train_queues
from orchestrator.wandb.settings import resolve_wandb
from trainables.spec import TrialSpec
from trainables.store.claims import Claims
from trainables.worker.wandb_log import WandbSpec


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
    elsewhere: int = 0
    """Networks to train that another driver, writing into the same store at once, trained."""


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
    plan = plan_sweep(config)
    log(plan.header)
    check_buildable(config, plan.todo, plan.datasets)  # a combination its family refuses: before Ray
    budget = local_trial_budget(plan, address, log)  # this machine's memory: refused before Ray starts
    if plan.todo or plan.jobs:
        join_cluster(plan, address, shared_fs, connect_timeout_s)
    queues = plan_queues(plan, address, budget, log) if plan.todo else []
    record_sweep(plan)
    work = train_and_measure(plan, queues, address, budget, wandb_settings, log)
    skipped = len(plan.specs) - len(plan.todo)
    failed = len(plan.todo) - work.trained - work.elsewhere
    return SweepOutcome(
        plan.store.uri, len(plan.specs), skipped, work.trained, failed, time.perf_counter() - started,
        work.measured, work.elsewhere,
    )


def train_and_measure(
    plan: SweepPlan, queues: list[Queue], address: str | None, budget: MemoryBudget | None,
    wandb_settings: WandbSpec | None, log: Log,
) -> ClaimedOutcome:
    """Measure what trained networks lack, then train the rest, each network under this driver's
    claim; what other drivers hold is waited for at the end (:mod:`orchestrator.run.claimed_work`)."""
    if not (plan.todo or plan.jobs):
        return ClaimedOutcome(0, 0, AnalysisOutcome(0, 0, 0, 0.0))
    config = plan.config
    with Claims(plan.store) as claims:
        if claims.warning:
            log(claims.warning)
        return work_claimed(
            plan.store, claims, plan.todo, plan.jobs,
            train=partial(train_claimed, plan, queues, address, budget, wandb_settings, log),
            measure=lambda jobs: run_measurements(plan.store, jobs, plan.datasets, config.resources, log),
            lacking=lambda specs: missing_measurements(plan.store, specs, config.plan, plan.datasets),
            log=log,
        )


def train_claimed(
    plan: SweepPlan, queues: list[Queue], address: str | None, budget: MemoryBudget | None,
    wandb_settings: WandbSpec | None, log: Log, specs: list[TrialSpec],
) -> int:
    """Train ``specs``, the networks this driver claimed: in ``queues`` when they are all of the plan's,
    else in queues planned for them alone; the networks trained."""
    if {spec.trial_id for spec in specs} != {spec.trial_id for spec in plan.todo}:
        plan = dataclasses.replace(plan, todo=specs)
        queues = plan_queues(plan, address, budget, log)
    costs = [pack_cost(pack, pack_shape(pack[0], plan.datasets[pack[0].dataset]))
             for queue in queues for pack in queue]
    return train_queues(plan, queues, wandb_settings, log, costs)


def local_trial_budget(plan: SweepPlan, address: str | None, log: Log) -> MemoryBudget | None:
    """On this machine (no ``address``), one trial's memory budget; the sweep is refused when its
    smallest trials cannot fit it. None when nothing is trained here or the budget is unknown."""
    if not plan.todo or address is not None:
        return None
    budget = local_budget(plan.config.resources, log)
    check_smallest_trials(plan.config, plan.todo, plan.datasets, budget)
    return budget


def join_cluster(plan: SweepPlan, address: str | None, shared_fs: bool, connect_timeout_s: float) -> None:
    """Start or join Ray (the store's credentials set in every worker), and check that the store is
    reachable from every node and, on this machine, that a trial's resources exist."""
    connect_ray(address, connect_timeout_s, plan.credentials)
    check_store_reachable(plan.store, shared_fs)
    if address is None:
        check_resources_fit(plan.config.resources)


def plan_queues(plan: SweepPlan, address: str | None, budget: MemoryBudget | None, log: Log) -> list[Queue]:
    """The networks to train in packs, the packs in queues (one per Tune trial) for the
    connected Ray's trial slots; on a cluster, sized for its smallest worker's memory."""
    config, datasets = plan.config, plan.datasets
    if address is not None:
        budget = cluster_budget(config.resources, log)
        check_smallest_trials(config, plan.todo, datasets, budget)
    slots = trial_slots(config.resources)
    packs = make_packs(config, plan.todo, datasets, slots, budget, log, configuration_labels(plan.specs))
    costs = [pack_cost(pack, pack_shape(pack[0], datasets[pack[0].dataset])) for pack in packs]
    queues = make_queues(packs, slots, costs)
    if len(queues) < len(packs):
        log(f"{len(packs)} packs in {len(queues)} Tune trials (queues of packs)")
    return queues
