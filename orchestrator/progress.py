"""One-line progress output for a running sweep (instead of Tune's wide tables)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from ray import tune

HEARTBEAT_SECONDS = 30.0


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class ProgressCallback(tune.Callback):
    """Prints a line per finished or failed trial, and a heartbeat while trials run."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total = total
        self.log = log
        self.started = time.monotonic()
        self.last_line = self.started

    def status(self, trials: list) -> str:
        counts = Counter(trial.status for trial in trials)
        return (
            f"[{format_elapsed(time.monotonic() - self.started)}] "
            f"done {counts['TERMINATED']}/{self.total}, running {counts['RUNNING']}, "
            f"pending {counts['PENDING']}, failed {counts['ERROR']}"
        )

    def _emit(self, line: str) -> None:
        self.log(line)
        self.last_line = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        accuracy = result.get("test_acc")
        detail = f"test_acc {accuracy:.4f}" if accuracy is not None else "finished"
        self._emit(f"{self.status(trials)} | {trial.config['pack']['label']} {detail}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._emit(f"{self.status(trials)} | {trial.config['pack']['label']} FAILED: {trial.error_file}")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._emit(f"{self.status(trials)} | {trial.config['pack']['label']} failed, retrying")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self.last_line >= HEARTBEAT_SECONDS:
            running = [t for t in trials if t.status == "RUNNING"]
            epochs = ", ".join(
                f"{t.config['pack']['label'][:8]}@{(t.last_result or {}).get('epoch', 0)}"
                for t in running
            )
            self._emit(f"{self.status(trials)}" + (f" | epochs {epochs}" if epochs else ""))
