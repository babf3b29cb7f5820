"""The sweep's progress as Tune reports it: a line per finished or failed pack, per retry, and a
heartbeat with each running pack's last epoch (the words are :mod:`orchestrator.run.progress`'s)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray import tune

from orchestrator.run.progress import Log, ProgressLog, failed, finished, lost, retrying


def label(trial) -> str:
    """The trial id of the first network of this Tune trial's queue of packs."""
    return trial.config["label"]


def error_text(trial) -> str:
    """The text of a failed Tune trial's error file: the local copy Tune has just written, else the
    one in the store (synced later)."""
    try:
        if trial.error_file and Path(trial.error_file).exists():
            return Path(trial.error_file).read_text(errors="replace")
        return str(trial.get_error() or "")
    except OSError:
        return ""


def error_line(trial) -> str:
    """The exception line of a failed Tune trial's error, its class named without its module
    (``DeviceError: ...``), and the file that holds the traceback."""
    lines = [line.strip() for line in error_text(trial).splitlines() if line.strip()]
    found = next((line for line in reversed(lines) if line.split(":", 1)[0].endswith("Error")), None)
    if found is None:
        return str(trial.error_file)
    name, _, message = found.partition(":")
    return f"{name.rsplit('.', 1)[-1]}:{message} (details: {trial.error_file})"


WORKER_DEATHS = (
    ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
    ray.exceptions.OutOfMemoryError,
)
"""Ray's errors for a trial whose worker process or node died (rather than raised)."""


def worker_died(trial) -> bool:
    """Whether a Tune trial's latest failure was its worker process or node dying: the error Tune
    has just pickled next to the trial (locally; the store's copy is synced later)."""
    path = trial.pickled_error_file
    try:
        with open(path, "rb") as stream:
            error = cloudpickle.load(stream)
    except (OSError, TypeError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return False
    return isinstance(error, WORKER_DEATHS)


class ProgressCallback(tune.Callback):
    """Counts networks, not Tune trials: Tune trials send ``packs_done`` and ``packs_failed``
    results (see :mod:`trainables.worker.tune_trial`), a trial is running until its ``final`` result;
    a Tune trial that fails for good (its worker died too often) counts the networks of the pack it
    held as failed. ``packs``: per pack (in the board's order) its label and networks to train;
    ``board``: the PackBoard actor that says which pack a trial holds; ``configurations``: per pack
    (by its label) its configuration's label, named in its lines."""

    def __init__(
        self, packs: list[tuple[str, int]], board: Any, log: Log, configurations: dict[str, str] | None = None
    ) -> None:
        self.progress = ProgressLog("done", sum(networks for _, networks in packs), log)
        self.packs = packs
        self.board = board
        self.configurations = configurations or {}
        self.troubled = False
        """Whether a trial failed (its worker lost, or an error Tune caught): Tune logged a traceback."""

    def _line(self, trials: list, event: str | None) -> None:
        """A progress line; ``running`` and ``pending`` count packs (held by a trial, not handed out yet)."""
        running, pending = ray.get(self.board.counts.remote())
        self.progress.line(event, running=running, pending=pending)

    def _named(self, pack: str) -> str:
        """A pack's label (its first trial id), with its configuration's label where it is known."""
        configuration = self.configurations.get(pack)
        return f"{pack} ({configuration})" if configuration else pack

    def _held(self, trial) -> tuple[str, int] | None:
        """(label, networks) of the pack ``trial`` holds on the board, if any."""
        index = ray.get(self.board.held.remote(label(trial)))
        return None if index is None else self.packs[index]

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        done = json.loads(result.get("packs_done") or "[]")
        failures = json.loads(result.get("packs_failed") or "[]")
        for pack, networks, accuracy, diverged in done:
            self.progress.done += networks
            detail = f"test_acc {accuracy:.4f}" if accuracy is not None else "finished"
            if networks - diverged > 1:
                detail += f" (mean of {networks - diverged} networks)"
            if diverged:
                detail = f"{detail}; {diverged} diverged" if accuracy is not None else f"{diverged} diverged"
            self._line(trials, finished(self._named(pack), detail))
        for pack, networks, error in failures:
            self.progress.failed += networks
            self._line(trials, failed(self._named(pack), error, networks))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial failed for good: its pack's networks failed, and when no other trial is left to take
        them, those of every pack not handed out yet."""
        self.troubled = True
        alone = not any(other is not trial and other.status in ("RUNNING", "PENDING", "PAUSED")
                        for other in trials)
        packs = [self.packs[index] for index in ray.get(self.board.abandon.remote(label(trial), alone))]
        lost = sum(networks for _, networks in packs)
        self.progress.failed += lost
        first = self._named(packs[0][0]) if packs else label(trial)
        self._line(trials, failed(first, error_line(trial), lost))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self.troubled = True
        held = self._held(trial)
        pack = held[0] if held is not None else label(trial)
        if worker_died(trial):
            node = (trial.last_result or {}).get("node") or "?"
            self._line(trials, lost(node, pack))
        else:
            self._line(trials, f"{retrying(pack)} ({error_line(trial)})")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.progress.heartbeat_due:
            running = [t for t in trials if t.status == "RUNNING" and "epoch" in (t.last_result or {})]
            epochs = ", ".join(
                f"{(t.last_result or {}).get('pack', label(t))[:8]}@{(t.last_result or {}).get('epoch', 0)}"
                for t in running
            )
            self._line(trials, f"epochs {epochs}" if epochs else None)
