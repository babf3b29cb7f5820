"""Optional Weights & Biases logging: one run per network, grouped by sweep.

The driver resolves the settings once (``orchestrator.wandb.settings``) and
hands the same :class:`WandbSpec` to every worker, so a cluster logs like a
laptop. A worker on the driver's node writes its run under ``<dir>/wandb/``;
a worker on any other node writes it to a temporary folder and, in offline
mode, copies the finished run into the store under
``wandb/<sweep>/<trial_id>/offline-run-*/`` (where ``wandb sync`` finds it).

Every W&B call is guarded: a W&B failure (no server, bad key, full disk)
prints one warning and turns logging off for that network; it never fails
the trial.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainables.data.tensors import DatasetTensors
from trainables.measure.evaluation import evaluate
from trainables.measure.stored import structure
from trainables.models.family import StateDict
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.worker.wandb_spec import WandbSpec

SWAP_TABLE_COLUMNS = ("kind", "layer", "epoch", "alpha", "draw", "test_acc", "test_loss")
SUMMARY_KEYS = ("test_acc", "test_loss", "init_test_acc", "train_acc", "train_seconds", "swap_seconds")


def start_run(
    settings: WandbSpec, group: str, name: str, job_type: str, config: dict | None = None,
    run_dir: str | None = None,
) -> Any:
    """A new W&B run where ``settings`` say, or under ``run_dir`` (raises whatever W&B raises).

    The process logs through a W&B service of its own: one inherited through
    ``WANDB_SERVICE`` (Ray's node processes pass on the environment of the
    process that started them) would not wait for our files at teardown.
    """
    import wandb

    os.environ.pop("WANDB_SERVICE", None)

    auth = {key: value for key, value in (("api_key", settings.api_key), ("base_url", settings.base_url))
            if value}
    return wandb.init(
        project=settings.project, entity=settings.entity, mode=settings.mode,
        dir=run_dir or settings.dir, tags=list(settings.tags) or None,
        group=group, name=name, job_type=job_type, config=config, reinit="create_new",
        settings=wandb.Settings(silent=True, init_timeout=settings.init_timeout_seconds, **auth),
    )


def copy_run_to_store(run_dir: Path, store: Store, relpath: str) -> None:
    """Copy a finished run folder (``offline-run-*``) into the store under ``relpath``."""
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            store.write_bytes(f"{relpath}/{run_dir.name}/{path.relative_to(run_dir).as_posix()}",
                              path.read_bytes())


def reinit_drops(swap_rows: list[dict], trained_acc: float) -> dict[str, float]:
    """Per layer: trained accuracy minus the accuracy with that layer back at epoch 0 (its stored
    BatchNorm statistics, not recalibrated)."""
    return {
        row["layer"]: trained_acc - row["test_acc"]
        for row in swap_rows
        if row["kind"] == "reinit" and row["epoch"] == 0 and not row.get("recalibrate")
    }


class WandbRun:
    """One network's W&B run; every method is a no-op once W&B has failed.

    ``node_id`` is the Ray node this runs on: away from ``settings.home_node``
    the run is written to a temporary folder and ends up in ``store``.
    """

    def __init__(
        self, settings: WandbSpec, spec: TrialSpec, sweep: str, data: DatasetTensors,
        store: Store, node_id: str,
    ) -> None:
        self.data = data
        self.run: Any = None
        self.finished_dir: Path | None = None
        self.settings = settings
        self.store = store
        self.relpath = f"{layout.wandb_runs_dir(sweep)}/{spec.trial_id}"
        away = bool(settings.home_node) and node_id != settings.home_node
        self.scratch = Path(tempfile.mkdtemp(prefix="layerswap-wandb-")) if away else None
        self.model = structure(spec, data.input_shape, data.n_classes)  # evaluated with the epoch's tensors
        self._guard("init", self._init, spec, sweep)
        if self.run is None:
            self._drop_scratch()

    def _init(self, spec: TrialSpec, sweep: str) -> None:
        config = {**spec.to_dict(), "trial_id": spec.trial_id, "sweep": sweep}
        self.run = start_run(
            self.settings, group=sweep, name=spec.trial_id, job_type="train", config=config,
            run_dir=str(self.scratch) if self.scratch is not None else None,
        )

    def _guard(self, what: str, action, *args) -> None:
        if what != "init" and self.run is None:
            return
        try:
            action(*args)
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            print(f"layerswap: W&B {what} failed, logging off for this network: {err}", file=sys.stderr)
            self.run = None

    def _drop_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def log_epoch(self, epoch: int, train_loss: float, params: StateDict) -> None:
        """Training loss of the epoch and test accuracy (eval mode) of the network (``params``) after it."""
        self._guard("log", self._log_epoch, epoch, train_loss, params)

    def _log_epoch(self, epoch: int, train_loss: float, params: StateDict) -> None:
        result = evaluate(self.model, params, self.data.x_test, self.data.y_test)
        self.run.log(
            {"epoch": epoch, "train_loss": train_loss, "test_acc": result.test_acc,
             "test_loss": result.test_loss}
        )

    def finish(self, swap_rows: list[dict], trial_row: dict) -> None:
        """The swap table and summary metrics, then close the run (see :func:`close_runs`)."""
        self._guard("finish", self._finish, swap_rows, trial_row)

    def _finish(self, swap_rows: list[dict], trial_row: dict) -> None:
        import wandb

        table = wandb.Table(
            columns=list(SWAP_TABLE_COLUMNS),
            data=[[row.get(column) for column in SWAP_TABLE_COLUMNS] for row in swap_rows],
        )
        self.run.log({"swaps": table})
        for key in SUMMARY_KEYS:
            if trial_row.get(key) is not None:
                self.run.summary[key] = trial_row[key]
        for layer, drop in reinit_drops(swap_rows, trial_row["test_acc"]).items():
            self.run.summary[f"reinit@0_drop/{layer}"] = drop
        run_dir = Path(self.run.settings.sync_dir)
        self.run.finish()
        self.finished_dir = run_dir

    def keep(self) -> None:
        """Away from the driver's node: copy the finished offline run into the store; drop the scratch."""
        if self.scratch is None:
            return
        try:
            if self.finished_dir is not None and self.settings.mode == "offline":
                copy_run_to_store(self.finished_dir, self.store, self.relpath)
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            print(f"layerswap: W&B run not copied to {self.relpath}: {err}", file=sys.stderr)
        finally:
            self._drop_scratch()


def close_runs(runs: list[WandbRun]) -> None:
    """After a trial's runs finished: have W&B write their files out, then keep them.

    ``run.finish()`` returns before W&B has flushed and closed the run's
    ``.wandb`` file; ``wandb.teardown()`` waits for that (the next run starts
    W&B's service again).
    """
    import wandb

    try:
        wandb.teardown()
    except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
        print(f"layerswap: W&B teardown failed: {err}", file=sys.stderr)
    for run in runs:
        run.keep()
