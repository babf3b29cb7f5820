"""Running a sweep: plan it, start or join Ray, measure what trained networks lack, train the rest.

Each step is a module of its own: :mod:`orchestrator.run.sweep_plan` (what the sweep will
do), :mod:`orchestrator.run.budget` and :mod:`orchestrator.run.packing` (how networks are
packed into trials), :mod:`orchestrator.run.claimed_work` (each network under this driver's
claim), :mod:`orchestrator.run.measuring` (Ray tasks) and :mod:`orchestrator.run.tune_sweep`
(Tune trials).

Time to the first result: on this machine Ray starts in the background as soon as the
store is open and something is left to train, while the driver imports torch, reads the
dataset and plans; this module imports torch and Ray Tune only inside the steps that use them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from orchestrator.config.sweep_config import SweepConfig
from orchestrator.run.connect import DEFAULT_CONNECT_TIMEOUT_S, BackgroundRay, connect_ray, job_runtime_env
from orchestrator.run.measuring import AnalysisOutcome, run_measurements
from orchestrator.run.phases import Phases
from orchestrator.run.progress import Log, print_line
from orchestrator.run.sweep_plan import SweepPlan, open_sweep, plan_sweep, record_sweep
from orchestrator.wandb.settings import resolve_wandb

if TYPE_CHECKING:
    import ray

    from orchestrator.run.budget import MemoryBudget
    from orchestrator.run.claimed_work import ClaimedOutcome
    from orchestrator.run.missing import MeasurementJob
    from orchestrator.run.tune_sweep import Queue
    from trainables.spec import TrialSpec
    from trainables.worker.wandb_spec import WandbSpec


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
    connected_here: bool = False
    """This call started or joined Ray (it was not running in this process before)."""


@dataclass(frozen=True)
class QueuePlan:
    """The networks to train as Tune trials: ``queues`` (one per trial) of packs, and ``costs``, each
    pack's training work in FLOPs in queue order (the PackBoard hands the packs out by it)."""

    queues: list[Queue]
    costs: list[float]


NOTHING_QUEUED = QueuePlan([], [])


def run_sweep(
    config: SweepConfig,
    address: str | None = None,
    shared_fs: bool = False,
    log: Log = print_line,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    phases: Phases | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> SweepOutcome:
    """Train every network of ``config`` not yet in the store; measure the rest's missing keys.

    A network already trained (its trial row exists) is never trained again:
    if ``config``'s plan asks for keys it lacks, only those are measured, from
    its stored weights. The store is opened and its writability probed before
    Ray starts; joining ``address`` gives up after ``connect_timeout_s`` seconds.
    Anything that refuses the sweep after Ray's start began leaves no Ray behind.
    ``phases`` (default: a fresh one) gets the laps of this sweep (:mod:`orchestrator.run.phases`);
    ``meanwhile`` runs in a helper thread while the networks train (the CLI imports the report).
    """
    started = time.perf_counter()
    phases = phases if phases is not None else Phases(time.monotonic())
    wandb_settings = resolve_wandb(config.wandb)  # before Ray starts: a missing API key is one line
    factory_modules = custom_model_modules(config)  # a custom model's factory: checked, shipped to workers
    start = open_sweep(config)
    runtime_env = job_runtime_env(start.credentials, factory_modules)
    background = BackgroundRay(runtime_env) if start.todo and address is None else None
    try:
        plan = plan_sweep(start)
        log(plan.header)
        budget = check_before_ray(plan, address, log)
        if plan.todo:
            # While Ray starts: Ray Tune's imports (1 s), and the W&B integration that Tune's fit
            # imports, W&B with it, to count its callbacks for Ray's usage stats (1.5 s).
            import ray.air.integrations.wandb  # noqa: F401

            import orchestrator.run.tune_sweep  # noqa: F401
        phases.lap("plan")
        connected = False
        if plan.todo or plan.jobs:
            connected = join_cluster(plan, address, shared_fs, connect_timeout_s, background, factory_modules)
        phases.lap("ray")
        queued = plan_queues(plan, address, budget, log) if plan.todo else NOTHING_QUEUED
        record_sweep(plan)
    except BaseException:
        if background is not None:
            background.cancel()
        raise
    datasets = put_datasets(plan) if plan.todo or plan.jobs else {}
    if meanwhile is not None and (plan.todo or plan.jobs):
        threading.Thread(target=meanwhile, name="layerswap-meanwhile", daemon=True).start()
    work = train_and_measure(plan, queued, datasets, address, budget, wandb_settings, log, phases)
    skipped = len(plan.specs) - len(plan.todo)
    failed = len(plan.todo) - work.trained - work.elsewhere
    return SweepOutcome(
        plan.store.uri, len(plan.specs), skipped, work.trained, failed, time.perf_counter() - started,
        work.measured, work.elsewhere, connected,
    )


def custom_model_modules(config: SweepConfig) -> list[ModuleType]:
    """A custom model's factory checked on this machine before Ray starts, and the modules to ship to
    the workers; none (and no torch imported) for a sweep of built-in families only."""
    if config.model != "custom":
        return []
    from orchestrator.run.factories import check_custom_model

    return check_custom_model(config)


def check_before_ray(plan: SweepPlan, address: str | None, log: Log) -> MemoryBudget | None:
    """What refuses a sweep before Ray is needed: a combination its family refuses, and on this
    machine trials too large for its memory (checked while Ray starts); one trial's memory budget."""
    from orchestrator.run.packing import check_buildable

    check_buildable(plan.config, plan.todo, plan.datasets)
    return local_trial_budget(plan, address, log)


def train_and_measure(
    plan: SweepPlan, queued: QueuePlan, datasets: dict[str, ray.ObjectRef], address: str | None,
    budget: MemoryBudget | None, wandb_settings: WandbSpec | None, log: Log, phases: Phases,
) -> ClaimedOutcome:
    """Measure what trained networks lack, then train the rest, each network under this driver's
    claim; what other drivers hold is waited for at the end (:mod:`orchestrator.run.claimed_work`).
    Each round's time goes to ``phases``."""
    from orchestrator.run.claimed_work import ClaimedOutcome, work_claimed
    from orchestrator.run.missing import missing_measurements
    from trainables.store.claims import Claims

    if not (plan.todo or plan.jobs):
        return ClaimedOutcome(0, 0, AnalysisOutcome(0, 0, 0, 0.0))
    config = plan.config

    def measure(jobs: list[MeasurementJob]) -> AnalysisOutcome:
        measured = run_measurements(plan.store, jobs, datasets, config.resources, log)
        phases.lap_work(measured.began, measured.times)
        return measured

    def train(specs: list[TrialSpec]) -> int:
        return train_claimed(plan, queued, datasets, address, budget, wandb_settings, log, phases, specs)

    with Claims(plan.store) as claims:
        if claims.warning:
            log(claims.warning)
        return work_claimed(
            plan.store, claims, plan.todo, plan.jobs, train=train, measure=measure,
            lacking=lambda specs: missing_measurements(plan.store, specs, config.plan, plan.datasets),
            log=log,
        )


def train_claimed(
    plan: SweepPlan, queued: QueuePlan, datasets: dict[str, ray.ObjectRef], address: str | None,
    budget: MemoryBudget | None, wandb_settings: WandbSpec | None, log: Log, phases: Phases,
    specs: list[TrialSpec],
) -> int:
    """Train ``specs``, the networks this driver claimed: as ``queued`` when they are all of the plan's,
    else in queues planned for them alone; the networks trained."""
    from orchestrator.run.tune_sweep import train_queues

    if {spec.trial_id for spec in specs} != {spec.trial_id for spec in plan.todo}:
        plan = dataclasses.replace(plan, todo=specs)
        queued = plan_queues(plan, address, budget, log)
    training = train_queues(plan, queued.queues, wandb_settings, log, queued.costs, datasets)
    phases.lap_work(training.began, training.times)
    return training.completed


def local_trial_budget(plan: SweepPlan, address: str | None, log: Log) -> MemoryBudget | None:
    """On this machine (no ``address``), one trial's memory budget; the sweep is refused when its
    smallest trials cannot fit it. None when nothing is trained here or the budget is unknown."""
    if not plan.todo or address is not None:
        return None
    from orchestrator.run.budget import local_budget
    from orchestrator.run.packing import check_smallest_trials

    budget = local_budget(plan.config.resources, log)
    check_smallest_trials(plan.config, plan.todo, plan.datasets, budget)
    return budget


def join_cluster(
    plan: SweepPlan, address: str | None, shared_fs: bool, connect_timeout_s: float,
    background: BackgroundRay | None = None, py_modules: list[ModuleType] | None = None,
) -> bool:
    """Start or join Ray (the store's credentials set in every worker, ``py_modules`` importable in
    every worker), or wait for the ``background`` start, and check that the store is reachable from
    every node and, on this machine, that a trial's resources exist. False when Ray was running in
    this process already."""
    from orchestrator.run.cluster import check_resources_fit, check_store_reachable

    if background is not None:
        background.wait()
        connected = background.started_here
    else:
        connected = connect_ray(address, connect_timeout_s, plan.credentials, py_modules)
    check_store_reachable(plan.store, shared_fs)
    if address is None:
        check_resources_fit(plan.config.resources)
    return connected


def plan_queues(plan: SweepPlan, address: str | None, budget: MemoryBudget | None, log: Log) -> QueuePlan:
    """The networks to train in packs, the packs in queues (one per Tune trial) for the
    connected Ray's trial slots, with each pack's cost; on a cluster, sized for its smallest
    worker's memory."""
    from orchestrator.catalog.naming import configuration_labels
    from orchestrator.run.budget import cluster_budget
    from orchestrator.run.cluster import trial_slots
    from orchestrator.run.packing import check_smallest_trials, make_packs, make_queues, pack_cost, pack_shape

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
    cost_of = {pack[0].trial_id: cost for pack, cost in zip(packs, costs, strict=True)}
    return QueuePlan(queues, [cost_of[pack[0].trial_id] for queue in queues for pack in queue])


def put_datasets(plan: SweepPlan) -> dict[str, ray.ObjectRef]:
    """The sweep's datasets in Ray's object store, once for every task and trial (they read the
    arrays in place)."""
    import ray

    return {name: ray.put(arrays) for name, arrays in plan.datasets.items()}
