"""Running a sweep: skip finished trials, start or join Ray, run the rest with Tune."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import ray
from ray import tune

from orchestrator.config import MAX_RETRIES, ConfigError, Resources, SweepConfig
from orchestrator.grid import expand_grid
from orchestrator.measuring import AnalysisOutcome, describe_jobs, missing_measurements, run_measurements
from orchestrator.packing import make_packs
from orchestrator.progress import ProgressCallback, label, print_line
from trainables.datasets import load_dataset
from trainables.spec import TrialSpec
from trainables.store import Store, StoreError
from trainables.tune_trial import run_tune_trial
from trainables.wandb_log import wandb_spec_to_dict

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
        "config": config.to_raw(),
        "trial_ids": [spec.trial_id for spec in specs],
    }
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return f"sweeps/{config.name}/{hashlib.sha256(body).hexdigest()[:16]}.json", body


def test_crash_hook() -> dict | None:
    """Test-only: make every trial kill its worker once at an epoch (see CrashHook)."""
    epoch = os.environ.get("LAYERSWAP_TEST_CRASH_AT_EPOCH")
    if not epoch:
        return None
    return {"epoch": int(epoch), "marker": os.environ["LAYERSWAP_TEST_CRASH_MARKER"]}


def connect_ray(address: str | None) -> None:
    """Join ``address``, or start Ray on this machine (all its CPUs and GPUs)."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Trial output stays in Tune's trial logs; the driver prints one line per event.
        ray.init(address="local", include_dashboard=False, log_to_driver=False)


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
    config: SweepConfig, address: str | None = None, shared_fs: bool = False, log: Log = print_line
) -> SweepOutcome:
    """Train every network of ``config`` not yet in the store; measure the rest's missing keys.

    A network already trained (its trial row exists) is never trained again:
    if ``config``'s plan asks for keys it lacks, only those are measured, from
    its stored weights.
    """
    started = time.perf_counter()
    store = Store.open(config.store)
    store.require_writable_version("sweep")
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
    if todo or jobs:
        connect_ray(address)
        check_store_reachable(store, shared_fs)
        if address is None:
            check_resources_fit(config.resources)
    if todo:
        packs = make_packs(config, todo, datasets[config.dataset], trial_slots(config.resources), log)
    record_path, record = sweep_record_relpath(config, specs)
    if not store.exists(record_path):
        store.write_bytes(record_path, record)
    measured = run_measurements(store, jobs, datasets, config.resources, log)
    if not todo:
        return SweepOutcome(
            store.uri, len(specs), len(specs), 0, 0, time.perf_counter() - started, measured
        )

    resources = {"cpu": config.resources.cpu_per_trial, "gpu": config.resources.gpu_per_trial}
    trainable = tune.with_resources(
        tune.with_parameters(run_tune_trial, datasets=datasets), resources
    )
    # Trials checkpoint every epoch (to resume where a dead worker stopped); with
    # short epochs Tune would warn about its own experiment snapshots each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tuner = tune.Tuner(
        trainable,
        param_space={
            "pack": tune.grid_search(
                [{"label": pack[0].trial_id, "specs": [spec.to_dict() for spec in pack]} for pack in packs]
            ),
            "sweep": config.name,
            "store": store.location,
            "plan": config.plan.to_dict(),
            "threads": max(1, int(config.resources.cpu_per_trial)),
            "gpu_share": config.resources.gpu_per_trial,
            "test_crash": test_crash_hook(),
            "wandb": wandb_spec_to_dict(config.wandb),
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=config.max_concurrent_trials or None,
            reuse_actors=True,  # a worker that imported torch once trains the next trial too
            trial_name_creator=label,
            trial_dirname_creator=label,
        ),
        run_config=tune.RunConfig(
            name=f"{config.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            storage_path=store.path("tune"),
            storage_filesystem=store.fs,
            failure_config=tune.FailureConfig(max_failures=MAX_RETRIES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[ProgressCallback(len(packs), log)],
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
