"""One-line progress output for a running sweep (instead of Tune's wide tables)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from ray import tune

HEARTBEAT_SECONDS = 30.0


def print_line(line: str) -> None:
    """The default progress sink: ``print`` looked up at call time.

    Tune pickles its callbacks; a reference to ``builtins.print`` taken
    earlier fails to pickle once Ray has replaced ``print`` (it does when it
    forwards worker output), and a module function pickles by name.
    """
    print(line, flush=True)


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def label(trial) -> str:
    """The trial id of the first network of this Tune trial's queue of packs."""
    return trial.config["label"]


def error_line(trial) -> str:
    """The exception line of a failed Tune trial's error (e.g. ``DeviceError: ...``), and its file."""
    try:
        text = trial.get_error() or ""
    except OSError:
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    found = next((line for line in reversed(lines) if line.split(":", 1)[0].endswith("Error")), None)
    return f"{found} (details: {trial.error_file})" if found else str(trial.error_file)


class ProgressCallback(tune.Callback):
    """A line per finished or failed pack (counts are networks), per retry, and a heartbeat.

    Tune trials send ``packs_done`` and ``packs_failed`` results (see
    :mod:`trainables.worker.tune_trial`); a Tune trial that fails for good (its worker
    died too often) counts its networks that never came back as failed.
    """

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total = total
        self.log = log
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.failed = 0

    def status(self, trials: list) -> str:
        counts = Counter(trial.status for trial in trials)
        return (
            f"[{format_elapsed(time.monotonic() - self.started)}] "
            f"done {self.done}/{self.total}, running {counts['RUNNING']}, "
            f"pending {counts['PENDING']}, failed {self.failed}"
        )

    def _emit(self, line: str) -> None:
        self.log(line)
        self.last_line = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        for pack, networks, accuracy in json.loads(result.get("packs_done") or "[]"):
            self.done += networks
            detail = f"test_acc {accuracy:.4f}" if accuracy is not None else "finished"
            if networks > 1:
                detail += f" (mean of {networks} networks)"
            self._emit(f"{self.status(trials)} | {pack} {detail}")
        for pack, networks, error in json.loads(result.get("packs_failed") or "[]"):
            self.failed += networks
            self._emit(f"{self.status(trials)} | {pack} FAILED ({networks} networks): {error}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._emit(f"{self.status(trials)} | {label(trial)} FAILED: {error_line(trial)}")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._emit(f"{self.status(trials)} | {label(trial)} failed, retrying")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last_line >= HEARTBEAT_SECONDS:
            running = [t for t in trials if t.status == "RUNNING"]
            epochs = ", ".join(
                f"{(t.last_result or {}).get('pack', label(t))[:8]}@{(t.last_result or {}).get('epoch', 0)}"
                for t in running
            )
            self._emit(f"{self.status(trials)}" + (f" | epochs {epochs}" if epochs else ""))
