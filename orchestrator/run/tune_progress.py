"""The sweep's progress as Tune reports it: a line per finished or failed pack, per retry, and a
heartbeat with each running pack's last epoch (the words are :mod:`orchestrator.run.progress`'s)."""

from __future__ import annotations

import json
from collections import Counter

from ray import tune

from orchestrator.run.progress import Log, ProgressLog, failed, finished, retrying


def label(trial) -> str:
    """The trial id of the first network of this Tune trial's queue of packs."""
    return trial.config["label"]


def error_line(trial) -> str:
    """The exception line of a failed Tune trial's error, its class named without its module
    (``DeviceError: ...``), and the file that holds the traceback."""
    try:
        text = trial.get_error() or ""
    except OSError:
        text = ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    found = next((line for line in reversed(lines) if line.split(":", 1)[0].endswith("Error")), None)
    if found is None:
        return str(trial.error_file)
    name, _, message = found.partition(":")
    return f"{name.rsplit('.', 1)[-1]}:{message} (details: {trial.error_file})"


class ProgressCallback(tune.Callback):
    """Counts networks, not Tune trials: Tune trials send ``packs_done`` and ``packs_failed``
    results (see :mod:`trainables.worker.tune_trial`); a Tune trial that fails for good (its
    worker died too often) counts its networks that never came back as failed."""

    def __init__(
        self, networks: dict[str, int], log: Log, configurations: dict[str, str] | None = None
    ) -> None:
        self.progress = ProgressLog("done", sum(networks.values()), log)
        self.networks = networks
        """Per Tune trial (by label), the networks it trains."""
        self.configurations = configurations or {}
        """Per pack (by its first trial id), its configuration's label, named in its lines."""
        self.reported: Counter[str] = Counter()
        """Per Tune trial, the networks it has reported done or failed."""

    def _line(self, trials: list, event: str | None) -> None:
        counts = Counter(trial.status for trial in trials if not self._all_reported(trial))
        self.progress.line(event, running=counts["RUNNING"], pending=counts["PENDING"])

    def _named(self, pack: str) -> str:
        """A pack's first trial id, with its configuration's label where it is known."""
        label = self.configurations.get(pack)
        return f"{pack} ({label})" if label else pack

    def _all_reported(self, trial) -> bool:
        """A trial whose every network has been reported is done, whatever Tune's status says
        (Tune marks it terminated only after its last result has been handled)."""
        return self.reported[label(trial)] >= self.networks.get(label(trial), 0)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        done = json.loads(result.get("packs_done") or "[]")
        failures = json.loads(result.get("packs_failed") or "[]")
        self.reported[label(trial)] += sum(networks for _, networks, _ in done + failures)
        for pack, networks, accuracy in done:
            self.progress.done += networks
            detail = f"test_acc {accuracy:.4f}" if accuracy is not None else "finished"
            if networks > 1:
                detail += f" (mean of {networks} networks)"
            self._line(trials, finished(self._named(pack), detail))
        for pack, networks, error in failures:
            self.progress.failed += networks
            self._line(trials, failed(self._named(pack), error, networks))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        lost = self.networks.get(label(trial), 0) - self.reported[label(trial)]
        self.progress.failed += lost
        self.reported[label(trial)] += lost
        self._line(trials, failed(label(trial), error_line(trial), lost))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._line(trials, retrying(label(trial)))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.progress.heartbeat_due:
            running = [t for t in trials if t.status == "RUNNING"]
            epochs = ", ".join(
                f"{(t.last_result or {}).get('pack', label(t))[:8]}@{(t.last_result or {}).get('epoch', 0)}"
                for t in running
            )
            self._line(trials, f"epochs {epochs}" if epochs else None)
