"""Fault injection for tests, in one place: a trial that kills its worker (or raises) once.

Set on the driver's environment by a test: ``LAYERSWAP_TEST_CRASH_AT_EPOCH`` (the epoch after
which to fail), ``LAYERSWAP_TEST_CRASH_MARKER`` (a file created just before failing, so the
retried trial lives) and, to raise a RuntimeError instead of killing the process (a failure
retried in place), ``LAYERSWAP_TEST_CRASH_RAISE``. The driver reads them once
(:func:`from_environment`) and hands the result to every trial with its config; a trial
calls :meth:`CrashAfterEpoch.after_epoch` at the end of each epoch. Without the variables
nothing is injected and nothing is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

EPOCH_ENV = "LAYERSWAP_TEST_CRASH_AT_EPOCH"
MARKER_ENV = "LAYERSWAP_TEST_CRASH_MARKER"
RAISE_ENV = "LAYERSWAP_TEST_CRASH_RAISE"


@dataclass(frozen=True)
class CrashAfterEpoch:
    """Kill this worker process once, right after ``epoch`` ends (and is checkpointed if due)."""

    epoch: int
    marker: str
    raise_error: bool = False
    """Raise a RuntimeError instead of killing the process (a failure retried in place)."""

    def after_epoch(self, epoch: int) -> None:
        if epoch == self.epoch and not os.path.exists(self.marker):
            Path(self.marker).write_text(f"{'raised' if self.raise_error else 'killed'} at epoch {epoch}\n")
            if self.raise_error:
                raise RuntimeError(f"test: failed at epoch {epoch}")
            os._exit(17)


def from_environment() -> CrashAfterEpoch | None:
    """The fault a test asked for through the environment, or None (every real sweep)."""
    epoch = os.environ.get(EPOCH_ENV)
    if not epoch:
        return None
    return CrashAfterEpoch(int(epoch), os.environ[MARKER_ENV], raise_error=bool(os.environ.get(RAISE_ENV)))
