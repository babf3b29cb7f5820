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

A pack's store files (its checkpoint weights, swaps, index rows) are written by a helper thread
(:class:`StoreWriter`) while the pack trains and measures; the pack counts as done, and is given
back to the board, once they are all written (so a worker lost meanwhile loses no network the
board thinks done), and a write that failed retries the pack like any other error. Before a Tune
checkpoint every write submitted so far is finished, so a resumed trial finds the checkpoint
weights it reads back.

Progress goes to the driver as Tune results: ``packs_done`` and
``packs_failed`` (JSON lists of [label, networks, mean test accuracy of those that did not diverge
(null if none), networks that diverged] and [label, networks, error]),
sent at most every :data:`REPORT_SECONDS` and at the end (``final``), each with the trial's ``node``
(its host name) and ``work_times`` (:class:`WorkTimes` as JSON: where this trial's time went). A
store that refuses writes for good (no space left, read-only) is not retried: the trial reports it
and stops the board, so every trial ends after its current pack.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
import torch
from ray import tune

from trainables.data.tensors import DatasetArrays, DatasetTensors
from trainables.errors import StoreUnwritable
from trainables.models.family import StateDict
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.train.device import make_deterministic, trial_device
from trainables.train.network import EpochEnd, TrainingState
from trainables.train.pack import PackEpochEnd
from trainables.worker.pack_job import Placement, run_networks
from trainables.worker.store_writer import StoreWriter, Written
from trainables.worker.trial_entry import TuneTrialConfig
from trainables.worker.wandb_log import WandbRun, close_runs
from trainables.worker.work_times import WorkTimes

STATE_FILE = "training_state.pt"
TRIAL_IDS_FILE = "trial_ids"
REPORT_SECONDS = 1.0
"""Progress results are sent to the driver at most this often (each one costs the driver an event)."""


def network_params(end: EpochEnd | PackEpochEnd, k: int) -> StateDict:
    """Network ``k``'s weights (views) from an epoch report of one network or a pack."""
    return end.network(k) if isinstance(end, PackEpochEnd) else end.state.model


@dataclass
class EpochReporter:
    """After each epoch of a pack: W&B, a Tune checkpoint when one is due, injected faults (tests)."""

    specs: list[TrialSpec]
    config: TuneTrialConfig
    wandb_runs: list[WandbRun | None]
    writer: StoreWriter | None = None
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
            if self.writer is not None:
                self.writer.wait()  # the checkpoint weights a resumed trial reads back are written
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
    times: WorkTimes = field(default_factory=WorkTimes)
    last_sent: float = field(default_factory=time.monotonic)

    def send(self, force: bool = False, final: bool = False) -> None:
        recent = time.monotonic() - self.last_sent < REPORT_SECONDS
        if not (self.done or self.failed or final) or (recent and not force):
            return
        self.times.mark_end()
        tune.report({"packs_done": json.dumps(self.done), "packs_failed": json.dumps(self.failed),
                     "node": socket.gethostname(), "final": final,
                     "work_times": self.times.to_json()})  # no "epoch": no pack is running now
        self.done, self.failed, self.last_sent = [], [], time.monotonic()


@dataclass(frozen=True)
class PackPlace:
    """Where a Tune trial's packs train and write: its store, placement, writer and time counts."""

    store: Store
    placement: Placement
    writer: StoreWriter
    times: WorkTimes


def train_one_pack(
    config: TuneTrialConfig,
    specs: list[TrialSpec],
    data: DatasetTensors,
    place: PackPlace,
    resume_from: TrainingState | None,
    finished: frozenset[str],
) -> tuple[list[float], list[Written]]:
    """Train and measure one pack; the test accuracies of the networks it records and their writes."""
    wandb_runs = [
        WandbRun(config.wandb, spec, config.sweep, data, place.store, place.placement.node_id)
        if config.wandb is not None and spec.trial_id not in finished else None
        for spec in specs
    ]
    reporter = EpochReporter(specs, config, wandb_runs, place.writer)
    results = run_networks(
        specs, config.plan, data, place.store, config.sweep, place.placement, reporter, resume_from, finished,
        place.writer, place.times,
    )
    runs = {spec.trial_id: run for spec, run in zip(specs, wandb_runs, strict=True) if run is not None}
    for result in results:
        if result.trial_row["trial_id"] in runs:
            runs[result.trial_row["trial_id"]].finish(result.swap_rows, result.trial_row)
    if runs:
        close_runs(list(runs.values()))
    return [result.trial_row["test_acc"] for result in results], [result.written for result in results]


@dataclass(frozen=True)
class PackAttempt:
    """A pack trained and measured (or failed for good: ``error``), its writes perhaps still running."""

    specs: list[TrialSpec]
    accuracies: list[float]
    written: list[Written]
    error: str | None = None
    attempt: int = 0
    """Attempts that failed before this one."""
    earlier: tuple[float, ...] = ()
    """Test accuracies of networks that earlier attempts recorded."""

    @property
    def recorded(self) -> list[float]:
        """Test accuracies of every network of the pack now recorded (once :func:`settle` returned)."""
        return [*self.earlier, *self.accuracies]


def written_ok(handle: Written) -> bool:
    return all(future.done() and future.exception() is None for future in handle.futures)


def train_with_retries(
    trial: TuneTrialConfig,
    specs: list[TrialSpec],
    data: DatasetTensors,
    place: PackPlace,
    resume_from: TrainingState | None,
    finished: frozenset[str],
    attempt: int = 0,
) -> PackAttempt:
    """Train and measure a pack, retried in place up to ``trial.retries`` times (``attempt`` failed
    already); its writes may still be running (:func:`settle`).

    ``finished``: networks already in the store. A retry starts the pack
    afresh, without the networks a failed attempt recorded.
    """
    while True:
        try:
            accuracies, written = train_one_pack(trial, specs, data, place, resume_from, finished)
            return PackAttempt(specs, accuracies, written, attempt=attempt)
        except StoreUnwritable:
            raise  # no space left, read-only: a retry cannot help
        except Exception as err:  # noqa: BLE001 - retried, then reported with its message
            attempt += 1
            if attempt > trial.retries:
                return PackAttempt(specs, [], [], f"{type(err).__name__}: {err}".splitlines()[0], attempt)
        place.writer.wait()  # what the failed attempt recorded is in the store before it is read
        finished = frozenset(place.store.completed_trial_ids())
        resume_from, specs = None, [spec for spec in specs if spec.trial_id not in finished]
        if not specs:
            return PackAttempt(specs, [], [], attempt=attempt)


def settle(trial: TuneTrialConfig, pack: PackAttempt, data: DatasetTensors, place: PackPlace) -> PackAttempt:
    """Wait for a pack's writes; when one failed, retry the pack's unrecorded networks (an attempt
    more), until they are written or the retries are spent. The result's :attr:`~PackAttempt.recorded`
    are the networks now in the store."""
    while pack.error is None:
        try:
            place.writer.settle(pack.written)
            return pack
        except StoreUnwritable:
            raise
        except Exception as err:  # noqa: BLE001 - a failed write fails the attempt
            error = f"{type(err).__name__}: {err}".splitlines()[0]
        place.writer.wait()
        kept = [acc for acc, handle in zip(pack.accuracies, pack.written, strict=True) if written_ok(handle)]
        if pack.attempt + 1 > trial.retries:
            return replace(pack, accuracies=kept, written=[], error=error)
        finished = frozenset(place.store.completed_trial_ids())
        specs = [spec for spec in pack.specs if spec.trial_id not in finished]
        earlier = (*pack.earlier, *kept)
        if not specs:
            return PackAttempt([], [], [], attempt=pack.attempt + 1, earlier=earlier)
        retried = train_with_retries(trial, specs, data, place, None, finished, pack.attempt + 1)
        pack = replace(retried, earlier=earlier)
    return pack


def dataset_arrays(datasets: dict[str, DatasetArrays | ray.ObjectRef], name: str) -> DatasetArrays:
    """A dataset by name, from Ray's object store when the driver put it there once for every
    trial and task (its arrays then read in place, not copied)."""
    value = datasets[name]
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class TrialQueue:
    """One Tune trial working through the packs the board hands it, each pack's files written while
    it trains; a pack is reported done, and given back to the board, once its files are all written."""

    def __init__(self, trial: TuneTrialConfig, datasets: dict[str, DatasetArrays | ray.ObjectRef]) -> None:
        self.trial = trial
        self.datasets = datasets
        store = Store.open(trial.store)
        here = Placement.here(torch.device("cpu"))
        placement = Placement.here(trial_device(trial.gpu_share, f"{here.hostname} ({here.node_id[:8]})"))
        self.progress = Progress()
        times = self.progress.times
        self.place = PackPlace(store, placement, StoreWriter(store, times=times), times)
        self.tensors: dict[str, DatasetTensors] = {}

    def data(self, name: str) -> DatasetTensors:
        if name not in self.tensors:
            self.tensors[name] = dataset_arrays(self.datasets, name).tensors(self.place.placement.device)
        return self.tensors[name]

    def run(self) -> None:
        board, label = self.trial.board, self.trial.label
        restored = restored_state()
        try:
            while (index := ray.get(board.next.remote(label))) is not None:
                specs = list(self.trial.packs[index])
                ids = [spec.trial_id for spec in specs]
                finished = frozenset(self.place.store.completed_trial_ids())
                if all(spec.trial_id in finished for spec in specs):
                    ray.get(board.done.remote(label))
                    continue
                resume_from = restored[1] if restored is not None and restored[0] == ids else None
                if resume_from is None:
                    specs = [spec for spec in specs if spec.trial_id not in finished]
                self.train(ids, specs, resume_from, finished)
                ray.get(board.done.remote(label))
                self.progress.send()
        finally:
            self.place.writer.close()
        self.progress.send(force=True, final=True)

    def train(
        self, ids: list[str], specs: list[TrialSpec], resume_from: TrainingState | None,
        finished: frozenset[str],
    ) -> None:
        """Train, measure and record one pack (``ids``: all its networks; ``specs``: those to train)."""
        data = self.data(specs[0].dataset)
        self.progress.times.mark_ready()
        try:
            attempt = train_with_retries(self.trial, specs, data, self.place, resume_from, finished)
            pack = settle(self.trial, attempt, data, self.place)
        except StoreUnwritable as err:
            self.progress.failed.append([ids[0], len(specs), f"{type(err).__name__}: {err}"])
            ray.get(self.trial.board.stop.remote(str(err)))
            return
        recorded = pack.recorded
        if pack.error is None or recorded:
            trained = [accuracy for accuracy in recorded if math.isfinite(accuracy)]  # NaN: diverged
            mean = statistics.fmean(trained) if trained else None
            self.progress.done.append([ids[0], len(recorded), mean, len(recorded) - len(trained)])
        if pack.error is not None:
            in_store = self.place.store.completed_trial_ids()  # the store says which ones are missing
            self.progress.failed.append([ids[0], sum(i not in in_store for i in ids), pack.error])


def run_trial(trial: TuneTrialConfig, datasets: dict[str, DatasetArrays | ray.ObjectRef]) -> None:
    """Run one Tune trial (:func:`trainables.worker.trial_entry.run_tune_trial` calls it in the worker)."""
    make_deterministic()
    torch.set_num_threads(max(1, trial.threads))
    TrialQueue(trial, datasets).run()
