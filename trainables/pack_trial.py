"""A pack of networks (same widths, different seeds) trained together, each stored as its own trial."""

from __future__ import annotations

import torch

from trainables.datasets import DatasetTensors
from trainables.models import build_model, tensor_layer
from trainables.packed import PackEpochCallback, PackResume, train_pack
from trainables.spec import TrialSpec
from trainables.store import Store, spec_relpath
from trainables.training import StateDict, TrainingState
from trainables.trial import (
    NetworkResult,
    Placement,
    checkpoint_rows,
    load_snapshots,
    record_network,
    save_checkpoint,
)


def run_pack(
    specs: list[TrialSpec],
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: PackEpochCallback | None = None,
    resume_from: TrainingState | None = None,
    finished: frozenset[str] = frozenset(),
) -> list[NetworkResult]:
    """Train ``specs`` as one pack; write the files of every network not in ``finished``.

    A pack resumed from ``resume_from`` is the whole pack it was checkpointed
    with, so networks that completed before the failure are trained along
    (their files are neither rewritten nor recorded again).
    """
    first = specs[0]
    with torch.device("meta"):  # layer names only: no memory, no init
        layers = tensor_layer(build_model(first.model, data.x_train.shape[1], first.widths, data.n_classes))
    for spec in specs:
        if spec.trial_id not in finished:
            store.write_bytes(spec_relpath(spec.trial_id), spec.canonical_json())
    weight_rows: list[list[dict]] = [[] for _ in specs]

    def save_snapshot(k: int, epoch: int, state: StateDict) -> None:
        if specs[k].trial_id not in finished:
            weight_rows[k].extend(save_checkpoint(store, specs[k].trial_id, epoch, state, layers))

    resume = None
    if resume_from is not None:
        snapshots = [load_snapshots(store, spec, resume_from.epoch, placement.device) for spec in specs]
        resume = PackResume(resume_from, snapshots)
        for k, network in enumerate(snapshots):
            for epoch, state in sorted(network.items()):
                weight_rows[k].extend(checkpoint_rows(specs[k].trial_id, epoch, state, layers))
    networks = train_pack(specs, data, placement.device, on_epoch, save_snapshot, resume)
    return [
        record_network(
            spec, network, rows, data, store, sweep, placement,
            resume_from.epoch if resume_from is not None else None,
        )
        for spec, network, rows in zip(specs, networks, weight_rows, strict=True)
        if spec.trial_id not in finished
    ]
