"""The function Ray Tune runs in a worker: one trial = a pack of networks.

A trial's config carries ``pack`` ({"label": trial id, "specs": spec dicts,
one per network}), the ``sweep`` name, the ``store`` URI, ``threads`` (its
CPU share), ``gpu_share`` and ``wandb`` (W&B settings or None). Datasets
arrive through Ray's object store (``tune.with_parameters``), so workers
need no local copy.

After every epoch the trial reports a Tune checkpoint holding the training
state; when Tune retries a trial whose worker died, it resumes from there and
finishes with the same weights as an uninterrupted run. Networks of the pack
whose trial row is already in the store are not trained again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.datasets import DatasetArrays, DatasetTensors
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.training import EpochEnd, TrainingState
from trainables.trial import Placement, run_network
from trainables.wandb_log import WandbRun, wandb_spec_from_dict

STATE_FILE = "training_state.pt"
TRIAL_ID_FILE = "trial_id"


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


@dataclass(frozen=True)
class EpochReporter:
    """Reports each epoch to Tune with a checkpoint of the network's training state."""

    spec: TrialSpec
    networks_done: int
    crash: CrashHook | None
    wandb_run: WandbRun | None

    def __call__(self, end: EpochEnd) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log_epoch(end)
        metrics = {"seed": self.spec.seed, "epoch": end.epoch, "train_loss": end.train_loss,
                   "networks_done": self.networks_done}
        with tempfile.TemporaryDirectory() as directory:
            end.state.save(Path(directory) / STATE_FILE)
            (Path(directory) / TRIAL_ID_FILE).write_text(self.spec.trial_id)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        if self.crash is not None:
            self.crash.maybe_crash(end.epoch)


def restored_state() -> tuple[str, TrainingState] | None:
    """(trial id, training state) of the checkpoint Tune restored this trial from, if any."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        trial_id = (Path(directory) / TRIAL_ID_FILE).read_text()
        return trial_id, TrainingState.load(Path(directory) / STATE_FILE)


def run_tune_trial(config: dict[str, Any], datasets: dict[str, DatasetArrays]) -> None:
    torch.set_num_threads(max(1, int(config["threads"])))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    store = Store.open(config["store"])
    placement = Placement.here(trial_device(float(config["gpu_share"])))
    crash = CrashHook(**config["test_crash"]) if config.get("test_crash") else None
    wandb_settings = wandb_spec_from_dict(config.get("wandb"))
    specs = [TrialSpec.from_dict(spec) for spec in config["pack"]["specs"]]
    finished = store.completed_trial_ids()
    restored = restored_state()
    tensors: dict[str, DatasetTensors] = {}
    for done, spec in enumerate(specs):
        if spec.trial_id in finished:
            continue
        if spec.dataset not in tensors:
            tensors[spec.dataset] = datasets[spec.dataset].tensors(placement.device)
        resume_from = restored[1] if restored and restored[0] == spec.trial_id else None
        wandb_run = (
            WandbRun(wandb_settings, spec, config["sweep"], tensors[spec.dataset])
            if wandb_settings else None
        )
        result = run_network(
            spec, tensors[spec.dataset], store, config["sweep"], placement,
            EpochReporter(spec, done, crash, wandb_run), resume_from,
        )
        if wandb_run is not None:
            wandb_run.finish(result.swap_rows, result.trial_row)
        tune.report(
            {"seed": spec.seed, "epoch": spec.epochs, "networks_done": done + 1,
             "test_acc": result.trial_row["test_acc"],
             "init_test_acc": result.trial_row["init_test_acc"]}
        )
