"""The function Ray Tune runs in a worker: one trial = a pack of networks.

A trial's config carries ``pack`` ({"label": trial id, "specs": spec dicts, one per network;
one today, several when seeds are packed), the ``sweep`` name, the ``store``
URI and ``threads`` (its CPU share). Datasets arrive through Ray's object
store (``tune.with_parameters``), so workers need no local copy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from ray import tune

from trainables.datasets import DatasetArrays, DatasetTensors
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.trial import Placement, run_network


def trial_device(gpu_share: float) -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if gpu_share > 0 and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def run_tune_trial(config: dict[str, Any], datasets: dict[str, DatasetArrays]) -> None:
    torch.set_num_threads(max(1, int(config["threads"])))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    store = Store.open(config["store"])
    placement = Placement.here(trial_device(float(config["gpu_share"])))
    specs = [TrialSpec.from_dict(spec) for spec in config["pack"]["specs"]]
    tensors: dict[str, DatasetTensors] = {}
    for done, spec in enumerate(specs):
        if spec.dataset not in tensors:
            tensors[spec.dataset] = datasets[spec.dataset].tensors(placement.device)
        on_epoch = partial(report_epoch, seed=spec.seed, networks_done=done)
        row = run_network(spec, tensors[spec.dataset], store, config["sweep"], placement, on_epoch)
        tune.report(
            {"seed": spec.seed, "epoch": spec.epochs, "networks_done": done + 1,
             "test_acc": row["test_acc"], "init_test_acc": row["init_test_acc"]}
        )


def report_epoch(epoch: int, train_loss: float, seed: int, networks_done: int) -> None:
    """Tune progress after each epoch of the network being trained."""
    tune.report({"seed": seed, "epoch": epoch, "train_loss": train_loss, "networks_done": networks_done})
