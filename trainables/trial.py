"""One network, end to end: train, save checkpoints, measure every swap, write the store.

Write order: spec.json, the weights files, then the weights and swaps index
rows, and the trial row last: a trial row means every other file of that
trial is complete.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata

import pyarrow as pa
import ray
import safetensors.torch
import torch
from torch import nn

from trainables.datasets import DatasetTensors
from trainables.device import cuda_columns
from trainables.models import build_model, tensor_layer
from trainables.packed import PackEpochCallback, PackResume, train_pack
from trainables.spec import TrialSpec
from trainables.store import Store, spec_relpath, weights_relpath
from trainables.swaps import evaluate_variants, swap_variants
from trainables.training import (
    EpochCallback,
    Resume,
    StateDict,
    TrainedNetwork,
    TrainingState,
    train_network,
)


@dataclass(frozen=True)
class Placement:
    """Where a trial runs, recorded in its trial row."""

    device: torch.device
    node_id: str
    hostname: str

    @classmethod
    def here(cls, device: torch.device) -> Placement:
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        return cls(device, node_id, socket.gethostname())


def package_version() -> str:
    try:
        return metadata.version("layerswap")
    except metadata.PackageNotFoundError:
        return "unknown"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes in C order (any dtype)."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw.tobytes()).hexdigest()


def save_checkpoint(
    store: Store, trial_id: str, epoch: int, state: StateDict, layers: dict[str, str]
) -> list[dict]:
    """Write one epoch's safetensors file; return its weights index rows."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    metadata_ = {"trial_id": trial_id, "epoch": str(epoch)}
    store.write_bytes(weights_relpath(trial_id, epoch), safetensors.torch.save(tensors, metadata=metadata_))
    return checkpoint_rows(trial_id, epoch, tensors, layers)


def checkpoint_rows(trial_id: str, epoch: int, state: StateDict, layers: dict[str, str]) -> list[dict]:
    """The weights index rows of one checkpoint file."""
    return [
        {
            "trial_id": trial_id,
            "epoch": epoch,
            "layer": layers[key],
            "tensor": key,
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "nbytes": tensor.numel() * tensor.element_size(),
            "sha256": tensor_sha256(tensor),
            "path": weights_relpath(trial_id, epoch),
        }
        for key, tensor in state.items()
    ]


def measure_swaps(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], data: DatasetTensors
) -> list[dict]:
    variants = list(swap_variants(spec, model, checkpoints))
    results = evaluate_variants(model, variants, data.x_test, data.y_test)
    return [
        {
            "trial_id": spec.trial_id,
            "kind": variant.kind,
            "layer": variant.layer,
            "epoch": variant.epoch,
            "alpha": None,
            "draw": variant.draw,
            "test_acc": result.test_acc,
            "test_loss": result.test_loss,
            "n_test": result.n_test,
        }
        for variant, result in zip(variants, results, strict=True)
    ]


def load_snapshots(store: Store, spec: TrialSpec, upto: int, device: torch.device) -> dict[int, StateDict]:
    """The checkpoint weights a resumed trial already wrote (epochs <= ``upto``)."""
    return {
        epoch: {
            key: value.to(device)
            for key, value in safetensors.torch.load(
                store.read_bytes(weights_relpath(spec.trial_id, epoch))
            ).items()
        }
        for epoch in spec.checkpoints
        if epoch <= upto
    }


def run_networks(
    specs: list[TrialSpec],
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: EpochCallback | PackEpochCallback | None = None,
    resume_from: TrainingState | None = None,
    finished: frozenset[str] = frozenset(),
) -> list[NetworkResult]:
    """Train ``specs`` (one network, or a pack trained together) and write their store files.

    Checkpoint weights are written as soon as training reaches them, so a
    trial resumed from ``resume_from`` reads the earlier ones back. A pack
    resumed from ``resume_from`` is the whole pack it was checkpointed with,
    so networks in ``finished`` are trained along, but their files are neither
    rewritten nor recorded again.
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

    snapshots: list[dict[int, StateDict]] = [{} for _ in specs]
    if resume_from is not None:
        snapshots = [load_snapshots(store, spec, resume_from.epoch, placement.device) for spec in specs]
        for k, network in enumerate(snapshots):
            for epoch, state in sorted(network.items()):
                weight_rows[k].extend(checkpoint_rows(specs[k].trial_id, epoch, state, layers))
    if len(specs) == 1:
        resume = Resume(resume_from, snapshots[0]) if resume_from is not None else None
        networks = [
            train_network(first, data, placement.device, on_epoch, partial(save_snapshot, 0), resume)
        ]
    else:
        pack_resume = PackResume(resume_from, snapshots) if resume_from is not None else None
        networks = train_pack(specs, data, placement.device, on_epoch, save_snapshot, pack_resume)
    return [
        record_network(
            spec, network, rows, data, store, sweep, placement,
            resume_from.epoch if resume_from is not None else None,
        )
        for spec, network, rows in zip(specs, networks, weight_rows, strict=True)
        if spec.trial_id not in finished
    ]


def run_network(
    spec: TrialSpec,
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: EpochCallback | None = None,
) -> NetworkResult:
    """Train one network and write all its store files (:func:`run_networks` of one)."""
    [result] = run_networks([spec], data, store, sweep, placement, on_epoch)
    return result


@dataclass(frozen=True)
class NetworkResult:
    trial_row: dict
    swap_rows: list[dict]


def record_network(
    spec: TrialSpec,
    network: TrainedNetwork,
    weight_rows: list[dict],
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    resumed_from_epoch: int | None = None,
) -> NetworkResult:
    """Measure every swap of a trained network and write its index rows, trial row last.

    ``weight_rows`` describe its checkpoint files, already written.
    """
    trial_id = spec.trial_id
    swap_started = time.perf_counter()
    swap_rows = measure_swaps(spec, network.model, network.checkpoints, data)
    swap_seconds = time.perf_counter() - swap_started
    baseline = {row["epoch"]: row for row in swap_rows if row["kind"] == "none"}
    trial_row = {
        "trial_id": trial_id,
        "sweep": sweep,
        "dataset": spec.dataset,
        "model": spec.model,
        "widths": list(spec.widths),
        "seed": spec.seed,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "optimizer": spec.optimizer.name,
        "lr": spec.optimizer.lr,
        "checkpoints": list(spec.checkpoints),
        "spec_json": spec.canonical_json().decode("utf-8"),
        "test_acc": baseline[spec.epochs]["test_acc"],
        "test_loss": baseline[spec.epochs]["test_loss"],
        "init_test_acc": baseline[0]["test_acc"],
        "train_seconds": network.train_seconds,
        "device": str(placement.device),
        "node_id": placement.node_id,
        "hostname": placement.hostname,
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        "package_version": package_version(),
        "finished_at": datetime.now(UTC),
        "n_classes": data.n_classes,
        "swap_seconds": swap_seconds,
        "resumed_from_epoch": resumed_from_epoch,
        **cuda_columns(placement.device),
    }
    store.write_index("weights", trial_id, pa.Table.from_pylist(weight_rows))
    store.write_index("swaps", trial_id, pa.Table.from_pylist(swap_rows))
    store.write_index("trials", trial_id, pa.Table.from_pylist([trial_row]))
    return NetworkResult(trial_row, swap_rows)
