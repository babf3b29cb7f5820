"""The function Ray Tune runs in a worker: one trial = a pack of networks.

A trial's config carries ``pack`` ({"label": trial id of its first network,
"specs": spec dicts, one per network}), the ``sweep`` name, the ``store``
URI (credentials redacted: Tune persists its configs), ``plan`` (the
measurement plan), ``threads`` (its CPU share) and ``gpu_share``. Datasets,
the W&B settings (None = no W&B) and the store's location with its
credentials arrive through Ray's object store (``tune.with_parameters``), so
workers need no local copy and no API key or store secret is written with the
trial's config.

A pack of one network trains with :func:`train_network`; a larger pack with
:func:`train_pack` (stacked weights). After every epoch the trial reports a
Tune checkpoint holding the training state; when Tune retries a trial whose
worker died, it resumes from there and finishes with the same weights as an
uninterrupted run. Networks whose trial row is already in the store are not
recorded again.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.datasets import DatasetArrays
from trainables.packed import PackEpochEnd, network_view
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.training import EpochEnd, StateDict, TrainingState
from trainables.trial import Placement, run_networks
from trainables.wandb_log import WandbRun, WandbSpec, close_runs

STATE_FILE = "training_state.pt"
TRIAL_IDS_FILE = "trial_ids"


def trial_device(gpu_share: float) -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if gpu_share > 0 and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


@dataclass(frozen=True)
class CrashHook:
    """Test-only: kill this worker process once, right after ``epoch`` is checkpointed.

    ``marker`` is a file created just before dying, so the retried trial lives.
    Set by the driver from ``LAYERSWAP_TEST_CRASH_AT_EPOCH`` / ``..._MARKER``.
    """

    epoch: int
    marker: str

    def maybe_crash(self, epoch: int) -> None:
        if epoch == self.epoch and not os.path.exists(self.marker):
            Path(self.marker).write_text(f"killed at epoch {epoch}\n")
            os._exit(17)


def network_params(end: EpochEnd | PackEpochEnd, k: int) -> StateDict:
    """Network ``k``'s weights (views) from an epoch report of one network or a pack."""
    return network_view(end.state.model, k) if isinstance(end, PackEpochEnd) else end.state.model


@dataclass(frozen=True)
class EpochReporter:
    """Reports each epoch to Tune with a checkpoint of the training state (and to W&B)."""

    specs: list[TrialSpec]
    crash: CrashHook | None
    wandb_runs: list[WandbRun | None]

    def __call__(self, end: EpochEnd | PackEpochEnd) -> None:
        losses = end.train_losses if isinstance(end, PackEpochEnd) else [end.train_loss]
        for k, run in enumerate(self.wandb_runs):
            if run is not None:
                run.log_epoch(end.epoch, losses[k], network_params(end, k))
        metrics = {"epoch": end.epoch, "train_loss": statistics.fmean(losses),
                   "networks": len(self.specs)}
        with tempfile.TemporaryDirectory() as directory:
            end.state.save(Path(directory) / STATE_FILE)
            ids = "\n".join(spec.trial_id for spec in self.specs)
            (Path(directory) / TRIAL_IDS_FILE).write_text(ids)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if self.crash is not None:
            self.crash.maybe_crash(end.epoch)


def restored_state() -> tuple[list[str], TrainingState] | None:
    """(trial ids trained, training state) of the checkpoint Tune restored this trial from."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        trial_ids = (Path(directory) / TRIAL_IDS_FILE).read_text().splitlines()
        return trial_ids, TrainingState.load(Path(directory) / STATE_FILE)


def run_tune_trial(
    config: dict[str, Any],
    datasets: dict[str, DatasetArrays],
    store_location: str,
    wandb: WandbSpec | None = None,
) -> None:
    torch.set_num_threads(max(1, int(config["threads"])))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    store = Store.open(store_location)
    placement = Placement.here(trial_device(float(config["gpu_share"])))
    crash = CrashHook(**config["test_crash"]) if config.get("test_crash") else None
    specs = [TrialSpec.from_dict(spec) for spec in config["pack"]["specs"]]
    finished = frozenset(store.completed_trial_ids())
    if all(spec.trial_id in finished for spec in specs):
        return
    restored = restored_state()
    if restored is not None and restored[0] == [spec.trial_id for spec in specs]:
        resume_from: TrainingState | None = restored[1]  # the whole pack, as checkpointed
    else:
        resume_from, specs = None, [spec for spec in specs if spec.trial_id not in finished]
    data = datasets[specs[0].dataset].tensors(placement.device)
    wandb_runs = [
        WandbRun(wandb, spec, config["sweep"], data, store, placement.node_id)
        if wandb is not None and spec.trial_id not in finished else None
        for spec in specs
    ]
    reporter = EpochReporter(specs, crash, wandb_runs)
    plan = MeasurementPlan.from_dict(config["plan"])
    results = run_networks(
        specs, plan, data, store, config["sweep"], placement, reporter, resume_from, finished
    )
    runs = {spec.trial_id: run for spec, run in zip(specs, wandb_runs, strict=True) if run is not None}
    for result in results:
        if result.trial_row["trial_id"] in runs:
            runs[result.trial_row["trial_id"]].finish(result.swap_rows, result.trial_row)
    if runs:
        close_runs(list(runs.values()))
    accuracies = [result.trial_row["test_acc"] for result in results]
    tune.report(
        {"epoch": specs[0].epochs, "networks": len(results),
         "test_acc": statistics.fmean(accuracies) if accuracies else float("nan")}
    )
