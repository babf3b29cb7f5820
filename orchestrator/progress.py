"""One-line progress output for a running sweep (instead of Tune's wide tables)."""

from __future__ import annotations

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
    """The trial id the sweep gave this Tune trial."""
    return trial.config["pack"]["label"]


class ProgressCallback(tune.Callback):
    """Prints a line per finished or failed trial, and a heartbeat while trials run."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total = total
        self.log = log
        self.started = time.monotonic()
        self.last_line = self.started
        self.finished: set[str] = set()
        self.failed: set[str] = set()

    def status(self, trials: list) -> str:
        counts = Counter(
            trial.status for trial in trials if label(trial) not in self.finished | self.failed
        )
        return (
            f"[{format_elapsed(time.monotonic() - self.started)}] "
            f"done {len(self.finished)}/{self.total}, running {counts['RUNNING']}, "
            f"pending {counts['PENDING']}, failed {len(self.failed)}"
        )

    def _emit(self, line: str) -> None:
        self.log(line)
        self.last_line = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.finished.add(label(trial))
        result = trial.last_result or {}
        accuracy, networks = result.get("test_acc"), result.get("networks", 1)
        detail = f"test_acc {accuracy:.4f}" if accuracy is not None else "finished"
        if networks > 1:
            detail += f" (mean of {networks} networks)"
        self._emit(f"{self.status(trials)} | {label(trial)} {detail}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.failed.add(label(trial))
        self._emit(f"{self.status(trials)} | {label(trial)} FAILED: {trial.error_file}")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._emit(f"{self.status(trials)} | {label(trial)} failed, retrying")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last_line >= HEARTBEAT_SECONDS:
            running = [t for t in trials if t.status == "RUNNING"]
            epochs = ", ".join(
                f"{label(t)[:8]}@{(t.last_result or {}).get('epoch', 0)}"
                for t in running
            )
            self._emit(f"{self.status(trials)}" + (f" | epochs {epochs}" if epochs else ""))
