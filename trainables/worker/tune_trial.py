"""The function Ray Tune runs in a worker: one Tune trial = a queue of packs of networks.

The driver builds one :class:`TuneTrialConfig` per Tune trial; they reach the
workers through Ray's object store (``tune.with_parameters``, as the datasets
do), so the store's location with its credentials and the W&B settings are
never written with Tune's config, which holds only the trial's ``label``. A
Tune trial trains its packs one after the other and measures its ``plan`` on
each network; each pack's networks are written to the store as soon as the
pack is done.

A pack of one network trains with :func:`train_network`; a larger pack with
:func:`train_pack` (stacked weights). A pack is checkpointed (a Tune
checkpoint of the training state) at its checkpoint epochs before the last and
otherwise whenever ``checkpoint_seconds`` have passed since its last
checkpoint; when Tune retries a Tune trial whose worker died, finished packs
are skipped (their trial rows are in the store) and the interrupted one resumes
from its checkpoint with the same weights as an uninterrupted run. A pack that
raises is retried in place ``retries`` times, then reported failed.

Which pack a trial trains next is the :class:`~trainables.worker.pack_board.PackBoard`'s to say
(its own queue first, then work left in other trials' queues), so no trial ends while work remains.

Progress goes to the driver as Tune results: ``packs_done`` and
``packs_failed`` (JSON lists of [label, networks, mean test accuracy of those that did not diverge
(null if none), networks that diverged] and [label, networks, error]),
sent at most every :data:`REPORT_SECONDS` and at the end (``final``), each with the trial's ``node``
(its host name). A store that refuses writes for good (no space left, read-only) is not retried:
the trial reports it and stops the board, so every trial ends after its current pack.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.data.tensors import DatasetArrays, DatasetTensors
from trainables.errors import StoreUnwritable
from trainables.models.family import StateDict
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.train.device import make_deterministic, trial_device
from trainables.train.network import EpochEnd, TrainingState
from trainables.train.pack import PackEpochEnd
from trainables.worker.fault_injection import CrashAfterEpoch
from trainables.worker.pack_job import Placement, run_networks
from trainables.worker.wandb_log import WandbRun, WandbSpec, close_runs

STATE_FILE = "training_state.pt"
TRIAL_IDS_FILE = "trial_ids"
REPORT_SECONDS = 1.0
"""Progress results are sent to the driver at most this often (each one costs the driver an event)."""


@dataclass(frozen=True)
class TuneTrialConfig:
    """Everything one Tune trial needs, built on the driver.

    ``packs``: every pack of the sweep, each networks of one width config trained
    together; ``board``: the :class:`~trainables.worker.pack_board.PackBoard` actor that says which
    of them this trial trains next; ``plan``: what to measure on each network once trained;
    ``label``: the trial id of the first network of its own queue (Tune's trial name);
    ``threads``: torch threads (its CPU share); ``gpu_share``: its GPU
    fraction (0: CPU); ``checkpoint_seconds``: at most this long between
    checkpoints of a pack; ``retries``: in-place retries of a pack that raises.
    """

    label: str
    sweep: str
    store: str
    packs: tuple[tuple[TrialSpec, ...], ...]
    board: Any
    """A Ray actor handle of :class:`~trainables.worker.pack_board.PackBoard`."""
    plan: MeasurementPlan = MeasurementPlan()
    threads: int = 1
    gpu_share: float = 0.0
    checkpoint_seconds: float = 60.0
    retries: int = 2
    wandb: WandbSpec | None = None
    faults: CrashAfterEpoch | None = None
    """Test-only fault injection (:mod:`trainables.worker.fault_injection`); None in every real sweep."""


def network_params(end: EpochEnd | PackEpochEnd, k: int) -> StateDict:
    """Network ``k``'s weights (views) from an epoch report of one network or a pack."""
    return end.network(k) if isinstance(end, PackEpochEnd) else end.state.model


@dataclass
class EpochReporter:
    """After each epoch of a pack: W&B, a Tune checkpoint when one is due, injected faults (tests)."""

    specs: list[TrialSpec]
    config: TuneTrialConfig
    wandb_runs: list[WandbRun | None]
    last_checkpoint: float = field(default_factory=time.monotonic)

    def checkpoint_due(self, epoch: int) -> bool:
        """At the spec's checkpoint epochs before the last, else after ``checkpoint_seconds``."""
        spec = self.specs[0]
        if epoch in spec.checkpoints and epoch < spec.epochs:
            return True
        return time.monotonic() - self.last_checkpoint >= self.config.checkpoint_seconds

    def __call__(self, end: EpochEnd | PackEpochEnd) -> None:
        losses = end.train_losses if isinstance(end, PackEpochEnd) else [end.train_loss]
        for k, run in enumerate(self.wandb_runs):
            if run is not None:
                run.log_epoch(end.epoch, losses[k], network_params(end, k))
        if self.checkpoint_due(end.epoch):
            metrics = {"epoch": end.epoch, "train_loss": statistics.fmean(losses),
                       "pack": self.specs[0].trial_id, "node": socket.gethostname()}
            with tempfile.TemporaryDirectory() as directory:
                end.state.save(Path(directory) / STATE_FILE)
                ids = "\n".join(spec.trial_id for spec in self.specs)
                (Path(directory) / TRIAL_IDS_FILE).write_text(ids)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
            self.last_checkpoint = time.monotonic()
        if self.config.faults is not None:
            self.config.faults.after_epoch(end.epoch)


def restored_state() -> tuple[list[str], TrainingState] | None:
    """(trial ids trained, training state) of the checkpoint Tune restored this trial from."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        trial_ids = (Path(directory) / TRIAL_IDS_FILE).read_text().splitlines()
        return trial_ids, TrainingState.load(Path(directory) / STATE_FILE)


@dataclass
class Progress:
    """Finished and failed packs not yet sent to the driver, sent at most every REPORT_SECONDS."""

    done: list[list] = field(default_factory=list)
    failed: list[list] = field(default_factory=list)
    last_sent: float = field(default_factory=time.monotonic)

    def send(self, force: bool = False, final: bool = False) -> None:
        recent = time.monotonic() - self.last_sent < REPORT_SECONDS
        if not (self.done or self.failed or final) or (recent and not force):
            return
        tune.report({"packs_done": json.dumps(self.done), "packs_failed": json.dumps(self.failed),
                     "node": socket.gethostname(), "final": final})  # no "epoch": no pack is running now
        self.done, self.failed, self.last_sent = [], [], time.monotonic()


def train_one_pack(
    config: TuneTrialConfig,
    specs: list[TrialSpec],
    data: DatasetTensors,
    store: Store,
    placement: Placement,
    resume_from: TrainingState | None,
    finished: frozenset[str],
) -> list[float]:
    """Train and record one pack; the test accuracies of the networks it recorded."""
    wandb_runs = [
        WandbRun(config.wandb, spec, config.sweep, data, store, placement.node_id)
        if config.wandb is not None and spec.trial_id not in finished else None
        for spec in specs
    ]
    reporter = EpochReporter(specs, config, wandb_runs)
    results = run_networks(
        specs, config.plan, data, store, config.sweep, placement, reporter, resume_from, finished
    )
    runs = {spec.trial_id: run for spec, run in zip(specs, wandb_runs, strict=True) if run is not None}
    for result in results:
        if result.trial_row["trial_id"] in runs:
            runs[result.trial_row["trial_id"]].finish(result.swap_rows, result.trial_row)
    if runs:
        close_runs(list(runs.values()))
    return [result.trial_row["test_acc"] for result in results]


def train_with_retries(
    trial: TuneTrialConfig,
    specs: list[TrialSpec],
    data: DatasetTensors,
    store: Store,
    placement: Placement,
    resume_from: TrainingState | None,
    finished: frozenset[str],
) -> tuple[list[float], str | None]:
    """(test accuracies of the networks recorded, None), or the error line after ``trial.retries`` retries.

    ``finished``: networks already in the store. A retry starts the pack
    afresh, without the networks a failed attempt recorded.
    """
    attempt = 0
    while True:
        try:
            return train_one_pack(trial, specs, data, store, placement, resume_from, finished), None
        except StoreUnwritable:
            raise  # no space left, read-only: a retry cannot help
        except Exception as err:  # noqa: BLE001 - retried, then reported with its message
            attempt += 1
            if attempt > trial.retries:
                return [], f"{type(err).__name__}: {err}".splitlines()[0]
        finished = frozenset(store.completed_trial_ids())
        resume_from, specs = None, [spec for spec in specs if spec.trial_id not in finished]
        if not specs:
            return [], None


def run_tune_trial(
    config: dict, datasets: dict[str, DatasetArrays], trials: dict[str, TuneTrialConfig]
) -> None:
    """Tune's entry point: ``config["label"]`` names this trial's :class:`TuneTrialConfig`."""
    trial = trials[config["label"]]
    make_deterministic()
    torch.set_num_threads(max(1, trial.threads))
    store = Store.open(trial.store)
    here = Placement.here(torch.device("cpu"))
    placement = Placement.here(trial_device(trial.gpu_share, f"{here.hostname} ({here.node_id[:8]})"))
    restored = restored_state()
    tensors: dict[str, DatasetTensors] = {}
    progress = Progress()
    while (index := ray.get(trial.board.next.remote(trial.label))) is not None:
        specs = list(trial.packs[index])
        ids = [spec.trial_id for spec in specs]
        finished = frozenset(store.completed_trial_ids())
        if all(spec.trial_id in finished for spec in specs):
            trial.board.done.remote(trial.label)
            continue
        resume_from = restored[1] if restored is not None and restored[0] == ids else None
        if resume_from is None:
            specs = [spec for spec in specs if spec.trial_id not in finished]
        if specs[0].dataset not in tensors:
            tensors[specs[0].dataset] = datasets[specs[0].dataset].tensors(placement.device)
        data = tensors[specs[0].dataset]
        try:
            accuracies, error = train_with_retries(
                trial, specs, data, store, placement, resume_from, finished
            )
        except StoreUnwritable as err:
            accuracies, error = [], f"{type(err).__name__}: {err}"
            ray.get(trial.board.stop.remote(str(err)))
        if error is None:
            trained = [accuracy for accuracy in accuracies if math.isfinite(accuracy)]  # NaN: diverged
            mean = statistics.fmean(trained) if trained else None
            progress.done.append([ids[0], len(accuracies), mean, len(accuracies) - len(trained)])
        else:
            progress.failed.append([ids[0], len(specs), error])
        ray.get(trial.board.done.remote(trial.label))
        progress.send()
    progress.send(force=True, final=True)
