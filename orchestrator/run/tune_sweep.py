"""Training a sweep's queues of packs as Ray Tune trials, one Tune trial per queue.

The trials' configs (the store's location with its credentials, the W&B settings) travel
with the datasets through Ray's object store, not in ``param_space``: Tune writes that into
the store. Tune pickles its storage filesystem into files under ``tune/``: it gets one built
without the URI's credentials, which reach it (and the workers) as environment variables.

Of Tune's loggers only the JSON one runs (its ``result.json`` is what Tune reads back at the
end): no CSV, no TensorBoard files nobody reads, and no tensorboardX import.

Trials start in the worker processes Ray started with its raylet (one per CPU), not in fresh
ones: :func:`trials_in_prestarted_workers`.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
import ray._private.worker as ray_worker
from ray import tune
from ray.tune.execution import class_cache
from ray.tune.logger import JsonLoggerCallback
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.catalog.naming import configuration_labels
from orchestrator.config.sweep_config import MAX_RETRIES
from orchestrator.run.logs import new_log_path
from orchestrator.run.progress import Log
from orchestrator.run.sweep_plan import SweepPlan
from orchestrator.run.tune_progress import ProgressCallback, label
from orchestrator.wandb.settings import on_this_node
from trainables.errors import StoreUnwritable
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.uri import split_credentials
from trainables.worker import fault_injection
from trainables.worker.pack_board import PackBoard
from trainables.worker.trial_entry import TuneTrialConfig, run_tune_trial
from trainables.worker.wandb_spec import WandbSpec
from trainables.worker.work_times import WorkTimes

Queue = list[list[TrialSpec]]
"""The packs one Tune trial works through, one after the other."""


def trial_configs(
    plan: SweepPlan, queues: list[Queue], wandb: WandbSpec | None, board: Any
) -> dict[str, TuneTrialConfig]:
    """One :class:`TuneTrialConfig` per queue, keyed by its label (its first network's trial id);
    each holds every pack of the sweep, and ``board`` (a PackBoard actor) hands them out."""
    config, faults = plan.config, fault_injection.from_environment()
    packs = tuple(tuple(pack) for queue in queues for pack in queue)
    return {
        queue[0][0].trial_id: TuneTrialConfig(
            label=queue[0][0].trial_id,
            sweep=config.name,
            store=plan.store.location,
            packs=packs,
            board=board,
            plan=config.plan,
            threads=max(1, int(config.resources.cpu_per_trial)),
            gpu_share=config.resources.gpu_per_trial,
            checkpoint_seconds=config.checkpoint_seconds,
            retries=MAX_RETRIES,
            wandb=on_this_node(wandb),
            faults=faults,
        )
        for queue in queues
    }


def pack_board(queues: list[Queue], costs: list[float]) -> Any:
    """The PackBoard actor (no resources) for ``queues``: each queue's packs by index
    into the sweep's packs in queue order, ``costs`` each pack's work."""
    indices: dict[str, list[int]] = {}
    position = 0
    for queue in queues:
        indices[queue[0][0].trial_id] = list(range(position, position + len(queue)))
        position += len(queue)
    # on the driver's node where it can be (soft: the driver of a Ray client is no node)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    board = ray.remote(PackBoard).options(num_cpus=0, scheduling_strategy=here).remote(indices, costs)
    return board


def networks_per_pack(queues: list[Queue], todo: list[TrialSpec]) -> list[tuple[str, int]]:
    """Per pack, in the sweep's pack order: its label and the networks it will train."""
    wanted = {spec.trial_id for spec in todo}
    packs = [pack for queue in queues for pack in queue]
    return [(pack[0].trial_id, sum(spec.trial_id in wanted for spec in pack)) for pack in packs]


def pack_labels(plan: SweepPlan, queues: list[Queue]) -> dict[str, str]:
    """Per pack (by its first trial id, as its progress lines name it), its configuration's label
    among the sweep's configurations."""
    labels = configuration_labels(plan.specs)
    return {pack[0].trial_id: labels[pack[0].config_id] for queue in queues for pack in queue}


def trials_in_prestarted_workers() -> None:
    """Let Tune's trial actors start in the idle workers Ray prestarts with its raylet (one per CPU,
    Ray already imported and connected), not in fresh processes.

    Ray hands an actor an idle worker only when their runtime_envs are equal, and
    prestarted workers have none; Tune gives every trial actor one that sets
    ``PL_DISABLE_FORK=1``, for PyTorch Lightning (ray-project/ray#28197), which
    layerswap's training never imports. Without that variable, a trial's worker is
    ready about 1.5 s sooner on a 2-core machine. A job that sets its own runtime_env (a store's
    credentials, a custom model's modules) gets fresh workers as before.
    """
    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


class WorkTimesCallback(tune.Callback):
    """The latest :class:`WorkTimes` each Tune trial reported (``work_times`` in its results)."""

    def __init__(self) -> None:
        self.times: dict[str, WorkTimes] = {}

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if result.get("work_times"):
            self.times[label(trial)] = WorkTimes.from_json(result["work_times"])


@dataclass(frozen=True)
class Training:
    """What :func:`train_queues` did: the networks ``completed``, and when Tune was started
    (``began``, Unix time) with what each trial reported of its time."""

    completed: int
    began: float
    times: list[WorkTimes] = field(default_factory=list)


def train_queues(
    plan: SweepPlan, queues: list[Queue], wandb: WandbSpec | None, log: Log, costs: list[float] | None = None,
    datasets: dict[str, ray.ObjectRef] | None = None,
) -> Training:
    """Run every queue as a Tune trial (Ray must be connected), packs handed out by a PackBoard
    (``costs``: each pack's work, in queue order). ``datasets``: the datasets already in Ray's
    object store (put once for the sweep's tasks and trials); else they are put here. Tune's own
    messages (a dead worker's traceback) go to a log file. A store that refused every write ends it
    with StoreUnwritable."""
    config, store = plan.config, plan.store
    began = time.time()
    tune_location, credentials = split_credentials(store.location)
    os.environ.update(credentials)
    board = pack_board(queues, costs or [1.0] * sum(len(queue) for queue in queues))
    trials = trial_configs(plan, queues, wandb, board)
    resources = {"cpu": config.resources.cpu_per_trial, "gpu": config.resources.gpu_per_trial}
    trials_in_prestarted_workers()
    trainable = tune.with_resources(
        tune.with_parameters(run_tune_trial, datasets=datasets or plan.datasets, trials=trials), resources
    )
    # Checkpoints can be frequent with short epochs (checkpoint_seconds: 0); Tune would
    # warn about its own experiment snapshots each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ctrl-C / SIGTERM stop the driver at once (the CLI says how to resume), not after
    # Tune's own shutdown, whose message suggests Tuner.restore; and Tune's banner
    # (experiment table, TensorBoard hint) stays off the terminal: the progress lines say it.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    log_path = new_log_path("tune")
    progress = ProgressCallback(networks_per_pack(queues, plan.todo), board, log, pack_labels(plan, queues))
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # the JSON logger is passed below
    work_times = WorkTimesCallback()
    tuner = tune.Tuner(
        trainable,
        param_space={"label": tune.grid_search(list(trials))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.max_concurrent_trials or None,
            reuse_actors=True,  # a worker that imported torch once trains the next trial too
            trial_name_creator=label,
            trial_dirname_creator=label,
        ),
        run_config=tune.RunConfig(
            # unique: two drivers starting in the same second must not share an experiment folder
            name=f"{config.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}",
            storage_path=store.path(layout.TUNE_DIR),
            storage_filesystem=Store.open(tune_location).fs if credentials else store.fs,
            failure_config=tune.FailureConfig(max_failures=MAX_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[progress, work_times, JsonLoggerCallback()],
            verbose=0,
        ),
    )
    try:
        with tune_messages_to(log_path):
            tuner.fit()
        reason = ray.get(board.stop_reason.remote())
    finally:
        ray.kill(board)  # one board per call: a long-lived Ray (a cluster, a notebook) keeps no stale ones
    if progress.troubled and log_path.exists():
        log(f"Ray Tune's messages (tracebacks included): {log_path}")
    if reason is not None:
        raise StoreUnwritable(reason)
    now_finished = store.completed_trial_ids()
    completed = sum(spec.trial_id in now_finished for spec in plan.todo)
    return Training(completed, began, list(work_times.times.values()))


TUNE_LOGGERS = ("ray.tune", "ray.train", "ray.air")
"""Where Tune logs (its controller, its storage syncer, its callbacks)."""


@contextmanager
def tune_messages_to(path: Path) -> Iterator[None]:
    """While Tune runs, its log records (a trial's traceback when its worker dies, storage errors)
    and the raylet's error messages (a worker died) go to the file ``path``, not to the terminal:
    the progress lines say what happened, in one line each."""
    handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in TUNE_LOGGERS]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    print_errors = ray_worker.print_to_stdstream

    def to_file(data: dict, ignore_prefix: bool) -> None:  # Ray prints the raylet's messages to stdout
        if data.get("pid") != "raylet":
            print_errors(data, ignore_prefix)
            return
        with open(path, "a", encoding="utf-8") as out:
            out.writelines(f"{line}\n" for line in data.get("lines", []))

    ray_worker.print_to_stdstream = to_file
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = print_errors
        for logger, was in zip(loggers, propagate, strict=True):
            logger.removeHandler(handler)
            logger.propagate = was
        handler.close()
