"""Training a sweep's queues of packs as Ray Tune trials, one Tune trial per queue.

The trials' configs (the store's location with its credentials, the W&B settings) travel
with the datasets through Ray's object store, not in ``param_space``: Tune writes that into
the store. Tune pickles its storage filesystem into files under ``tune/``: it gets one built
without the URI's credentials, which reach it (and the workers) as environment variables.

Of Tune's loggers only the JSON one runs (its ``result.json`` is what Tune reads back at the
end): no CSV, no TensorBoard files nobody reads, and no tensorboardX import.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from orchestrator.config.sweep_config import MAX_RETRIES
from orchestrator.run.progress import Log
from orchestrator.run.sweep_plan import SweepPlan
from orchestrator.run.tune_progress import ProgressCallback, label
from orchestrator.wandb.settings import on_this_node
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.uri import split_credentials
from trainables.worker import fault_injection
from trainables.worker.tune_trial import TuneTrialConfig, run_tune_trial
from trainables.worker.wandb_spec import WandbSpec
from trainables.worker.work_times import WorkTimes

Queue = list[list[TrialSpec]]
"""The packs one Tune trial works through, one after the other."""


def trial_configs(
    plan: SweepPlan, queues: list[Queue], wandb: WandbSpec | None
) -> dict[str, TuneTrialConfig]:
    """One :class:`TuneTrialConfig` per queue, keyed by its label (its first network's trial id)."""
    config, faults = plan.config, fault_injection.from_environment()
    return {
        queue[0][0].trial_id: TuneTrialConfig(
            label=queue[0][0].trial_id,
            sweep=config.name,
            store=plan.store.location,
            packs=tuple(tuple(pack) for pack in queue),
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


def networks_per_trial(trials: dict[str, TuneTrialConfig], todo: list[TrialSpec]) -> dict[str, int]:
    """Per Tune trial, the networks it will train (those of its packs still to train)."""
    wanted = {spec.trial_id for spec in todo}
    return {
        name: sum(spec.trial_id in wanted for pack in trial.packs for spec in pack)
        for name, trial in trials.items()
    }


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
    plan: SweepPlan, queues: list[Queue], wandb: WandbSpec | None, log: Log,
    datasets: dict[str, ray.ObjectRef] | None = None,
) -> Training:
    """Run every queue as a Tune trial (Ray must be connected). ``datasets``: the datasets already
    in Ray's object store (put once for the sweep's tasks and trials); else they are put here."""
    config, store = plan.config, plan.store
    began = time.time()
    tune_location, credentials = split_credentials(store.location)
    os.environ.update(credentials)
    trials = trial_configs(plan, queues, wandb)
    resources = {"cpu": config.resources.cpu_per_trial, "gpu": config.resources.gpu_per_trial}
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
            name=f"{config.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            storage_path=store.path(layout.TUNE_DIR),
            storage_filesystem=Store.open(tune_location).fs if credentials else store.fs,
            failure_config=tune.FailureConfig(max_failures=MAX_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[ProgressCallback(networks_per_trial(trials, plan.todo), log), work_times,
                       JsonLoggerCallback()],
            verbose=0,
        ),
    )
    tuner.fit()
    now_finished = store.completed_trial_ids()
    completed = sum(spec.trial_id in now_finished for spec in plan.todo)
    return Training(completed, began, list(work_times.times.values()))
