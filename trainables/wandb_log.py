"""Optional Weights & Biases logging: one run per network, grouped by sweep.

Every W&B call is guarded: a W&B failure (no server, bad key, full disk)
prints one warning and turns logging off for that network; it never fails
the trial.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from trainables.datasets import DatasetTensors
from trainables.models import build_model
from trainables.spec import TrialSpec
from trainables.swaps import evaluate
from trainables.training import StateDict
from trainables.wandb_spec import WandbSpec


def start_run(settings: WandbSpec, group: str, name: str, job_type: str, config: dict | None = None) -> Any:
    """A new W&B run where ``settings`` say (raises whatever W&B raises; callers guard)."""
    import wandb

    return wandb.init(
        project=settings.project, entity=settings.entity, mode=settings.mode, dir=settings.dir,
        group=group, name=name, job_type=job_type, config=config, reinit="create_new",
        settings=wandb.Settings(silent=True, init_timeout=settings.init_timeout_seconds),
    )


class WandbRun:
    """One network's W&B run; every method is a no-op once W&B has failed."""

    def __init__(self, settings: WandbSpec, spec: TrialSpec, sweep: str, data: DatasetTensors) -> None:
        self.data = data
        self.run: Any = None
        with torch.device("meta"):  # structure only: evaluated with the epoch's tensors
            self.model = build_model(spec.model, data.x_train.shape[1], spec.widths, data.n_classes)
        self._guard("init", self._init, settings, spec, sweep)

    def _init(self, settings: WandbSpec, spec: TrialSpec, sweep: str) -> None:
        config = {**spec.to_dict(), "trial_id": spec.trial_id, "sweep": sweep}
        self.run = start_run(settings, group=sweep, name=spec.trial_id, job_type="train", config=config)

    def _guard(self, what: str, action, *args) -> None:
        if what != "init" and self.run is None:
            return
        try:
            action(*args)
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            print(f"layerswap: W&B {what} failed, logging off for this network: {err}", file=sys.stderr)
            self.run = None

    def log_epoch(self, epoch: int, train_loss: float, params: StateDict) -> None:
        """Training loss of the epoch and test accuracy of the network (``params``) after it."""
        self._guard("log", self._log_epoch, epoch, train_loss, params)

    def _log_epoch(self, epoch: int, train_loss: float, params: StateDict) -> None:
        result = evaluate(self.model, params, self.data.x_test, self.data.y_test)
        self.run.log(
            {"epoch": epoch, "train_loss": train_loss, "test_acc": result.test_acc,
             "test_loss": result.test_loss}
        )

    def finish(self, swap_rows: list[dict], trial_row: dict) -> None:
        """The swap table and the trained/initial accuracies, then close the run."""
        self._guard("finish", self._finish, swap_rows, trial_row)

    def _finish(self, swap_rows: list[dict], trial_row: dict) -> None:
        import wandb

        columns = ["kind", "layer", "epoch", "draw", "test_acc", "test_loss"]
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in swap_rows])
        self.run.log({"swaps": table})
        for key in ("test_acc", "test_loss", "init_test_acc", "train_seconds", "swap_seconds"):
            self.run.summary[key] = trial_row[key]
        self.run.finish()
