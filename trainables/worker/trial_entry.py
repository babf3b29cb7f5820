"""What the driver hands Ray Tune for each trial: its :class:`TuneTrialConfig`, and the function Tune
runs (:func:`run_tune_trial`), which imports the training code, torch and all, in the worker: the
driver plans and runs a sweep of MLPs without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.worker.fault_injection import CrashAfterEpoch
from trainables.worker.quiet_exit import quiet_stops
from trainables.worker.wandb_spec import WandbSpec

if TYPE_CHECKING:
    import ray

    from trainables.data.tensors import DatasetArrays


@dataclass(frozen=True)
class TuneTrialConfig:
    """Everything one Tune trial needs, built on the driver.

    ``packs``: every pack of the sweep, each networks of one configuration trained
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


def run_tune_trial(
    config: dict, datasets: dict[str, DatasetArrays | ray.ObjectRef], trials: dict[str, TuneTrialConfig]
) -> None:
    """Tune's entry point: ``config["label"]`` names this trial's :class:`TuneTrialConfig`."""
    from trainables.worker.tune_trial import run_trial

    quiet_stops()  # Tune ends the trial's worker with SIGTERM
    run_trial(trials[config["label"]], datasets)
