"""Running a sweep: skip finished trials, start or join Ray, run the rest with Tune."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import ray
from ray import tune

from orchestrator.config.blocks import Resources
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import MAX_RETRIES, SweepConfig
from orchestrator.config.values import ConfigError
from orchestrator.run.budget import cluster_budget, local_budget
from orchestrator.run.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_ray
from orchestrator.run.measuring import AnalysisOutcome, describe_jobs, missing_measurements, run_measurements
from orchestrator.run.packing import check_smallest_trials, make_packs, make_queues, pack_cost
from orchestrator.run.progress import ProgressCallback, label, print_line
from orchestrator.wandb.settings import on_this_node, resolve_wandb
from trainables.data.datasets import load_dataset
from trainables.spec import TrialSpec
from trainables.store import Store, StoreError, layout
from trainables.store.uri import redact_secrets, split_credentials
from trainables.worker.tune_trial import CrashHook, TuneTrialConfig, run_tune_trial

Log = Callable[[str], None]


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


def sweep_record_relpath(config: SweepConfig, specs: list[TrialSpec]) -> tuple[str, bytes]:
    """The sweep's grid record (config and expected trial ids), named by its content hash."""
    record = {
        "sweep": config.name,
        "config": {**config.to_raw(), "store": redact_secrets(config.store)},
        "trial_ids": [spec.trial_id for spec in specs],
    }
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return layout.sweep_record_path(config.name, body), body


def test_crash_hook() -> CrashHook | None:
    """Test-only: make every trial kill its worker once at an epoch (see CrashHook)."""
    epoch = os.environ.get("LAYERSWAP_TEST_CRASH_AT_EPOCH")
    if not epoch:
        return None
    return CrashHook(int(epoch), os.environ["LAYERSWAP_TEST_CRASH_MARKER"],
                     raise_error=bool(os.environ.get("LAYERSWAP_TEST_CRASH_RAISE")))


def check_store_reachable(store: Store, shared_fs: bool) -> None:
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) > 1 and store.is_local and not shared_fs:
        raise StoreError(
            f"store: {store.uri!r} is a local path but the Ray cluster has {len(nodes)} nodes; "
            "trials on other nodes would write to their own disks. Use an s3:// (or other "
            "shared) URI, or pass --shared-fs if every node mounts this path"
        )


def trial_slots(resources: Resources) -> int:
    """How many trials the connected Ray can run at once now (at least 1)."""
    available = ray.cluster_resources()
    if resources.gpu_per_trial > 0:
        return max(1, int(available.get("GPU", 0) // resources.gpu_per_trial))
    return max(1, int(available.get("CPU", 0) // resources.cpu_per_trial))


def check_resources_fit(resources: Resources) -> None:
    """On a fixed (non-autoscaling) Ray, refuse a trial that could never be scheduled."""
    available = ray.cluster_resources()
    for field, key, asked in (
        ("resources.cpu_per_trial", "CPU", resources.cpu_per_trial),
        ("resources.gpu_per_trial", "GPU", resources.gpu_per_trial),
    ):
        if asked > available.get(key, 0):
            raise ConfigError(
                f"{field}: {asked} is more than this Ray has ({available.get(key, 0):g} {key}); "
                f"lower it{' or set it to 0 to train on the CPU' if key == 'GPU' else ''}"
            )


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
    store = Store.open(config.store)
    store.check_writable()
    if store.version() is not None:
        store.require_writable_version("sweep")  # a store of another version: refused before Ray starts
    specs = expand_grid(config)
    finished = store.completed_trial_ids()
    todo = [spec for spec in specs if spec.trial_id not in finished]
    trained = [spec for spec in specs if spec.trial_id in finished]
    datasets = {config.dataset: load_dataset(config.dataset)}
    jobs = missing_measurements(store, trained, config.plan, datasets) if trained else []
    log(
        f"sweep {config.name}: {len(specs)} networks in the grid, {len(trained)} already trained, "
        f"{len(todo)} to train, {describe_jobs(jobs)}; "
        f"store {store.uri}"
    )
    # Tune pickles its storage filesystem into files under tune/: it gets one built
    # without the URI's credentials, which reach it (and the workers) as environment variables.
    tune_location, credentials = split_credentials(store.location)
    data = datasets[config.dataset]
    if todo and address is None:  # this machine's memory: refuse before Ray starts
        budget = local_budget(config.resources, log)
        check_smallest_trials(config, data, budget)
    if todo or jobs:
        connect_ray(address, connect_timeout_s, credentials)
        check_store_reachable(store, shared_fs)
        if address is None:
            check_resources_fit(config.resources)
    if todo:
        if address is not None:  # the smallest worker's memory
            budget = cluster_budget(config.resources, log)
            check_smallest_trials(config, data, budget)
        slots = trial_slots(config.resources)
        packs = make_packs(config, todo, data, slots, budget, log)
        queues = make_queues(packs, slots, [pack_cost(config, pack, data) for pack in packs])
    store.require_writable_version("sweep")  # a new store gets its version marker once nothing can refuse it
    record_path, record = sweep_record_relpath(config, specs)
    if not store.exists(record_path):
        store.write_bytes(record_path, record)
    measured = run_measurements(store, jobs, datasets, config.resources, log)
    if not todo:
        return SweepOutcome(
            store.uri, len(specs), len(specs), 0, 0, time.perf_counter() - started, measured
        )

    os.environ.update(credentials)
    # The trials' configs (the store's location with its credentials, W&B settings) travel
    # with the datasets through Ray's object store, not in param_space: Tune writes that to the store.
    trials = {
        queue[0][0].trial_id: TuneTrialConfig(
            label=queue[0][0].trial_id,
            sweep=config.name,
            store=store.location,
            packs=tuple(tuple(pack) for pack in queue),
            plan=config.plan,
            threads=max(1, int(config.resources.cpu_per_trial)),
            gpu_share=config.resources.gpu_per_trial,
            checkpoint_seconds=config.checkpoint_seconds,
            retries=MAX_RETRIES,
            wandb=on_this_node(wandb_settings),
            test_crash=test_crash_hook(),
        )
        for queue in queues
    }
    if len(queues) < len(packs):
        log(f"{len(packs)} packs in {len(queues)} Tune trials (queues of packs)")
    resources = {"cpu": config.resources.cpu_per_trial, "gpu": config.resources.gpu_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(run_tune_trial, datasets=datasets, trials=trials), resources
    )
    # Checkpoints can be frequent with short epochs (checkpoint_seconds: 0); Tune would
    # warn about its own experiment snapshots each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ctrl-C / SIGTERM stop the driver at once (the CLI says how to resume), not after
    # Tune's own shutdown, whose message suggests Tuner.restore; and Tune's banner
    # (experiment table, TensorBoard hint) stays off the terminal: the progress lines say it.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
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
            callbacks=[ProgressCallback(len(todo), log)],
            verbose=0,
        ),
    )
    tuner.fit()
    now_finished = store.completed_trial_ids()
    completed = sum(spec.trial_id in now_finished for spec in todo)
    return SweepOutcome(
        store.uri,
        len(specs),
        len(specs) - len(todo),
        completed,
        len(todo) - completed,
        time.perf_counter() - started,
        measured,
    )
