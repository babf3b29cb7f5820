"""One network, end to end: train, save checkpoints, measure every swap, write the store.

Write order: spec.json, the weights files, then the weights, swaps, layers
(weight movement) and criticality (when the plan asks for it) index rows,
and the trial row last: a trial row means every other file of that
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

from trainables.data.tensors import DatasetTensors
from trainables.measure.evaluation import evaluate
from trainables.measure.stored import (
    load_checkpoints,
    measure,
    network_criticality,
    network_movement,
    structure,
    wanted_keys,
)
from trainables.models import registry
from trainables.models.custom import factory_source
from trainables.models.family import StateDict, layer_of_keys
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import TRIALS_SCHEMA
from trainables.train.cuda_graphs import graphs_enabled
from trainables.train.device import cuda_columns
from trainables.train.network import (
    EpochCallback,
    Resume,
    TrainedNetwork,
    TrainingState,
    train_network,
)
from trainables.train.pack import PackEpochCallback, PackResume, train_pack


@dataclass(frozen=True)
class Placement:
    """Where a trial runs, recorded in its trial row; ``accelerator`` is ``cpu`` or the GPU's name."""

    device: torch.device
    node_id: str
    hostname: str
    accelerator: str

    @classmethod
    def here(cls, device: torch.device) -> Placement:
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        accelerator = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        return cls(device, node_id, socket.gethostname(), accelerator)


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
    data = safetensors.torch.save(tensors, metadata=metadata_)
    store.write_bytes(layout.weights_path(trial_id, epoch), data)
    return checkpoint_rows(trial_id, epoch, tensors, layers)


def checkpoint_rows(trial_id: str, epoch: int, state: StateDict, layers: dict[str, str]) -> list[dict]:
    """The weights index rows of one checkpoint file (``layer`` null for a tensor outside every layer)."""
    return [
        {
            "trial_id": trial_id,
            "epoch": epoch,
            "layer": layers.get(key),
            "tensor": key,
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "nbytes": tensor.numel() * tensor.element_size(),
            "sha256": tensor_sha256(tensor),
            "path": layout.weights_path(trial_id, epoch),
        }
        for key, tensor in state.items()
    ]


def run_networks(
    specs: list[TrialSpec],
    plan: MeasurementPlan,
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: EpochCallback | PackEpochCallback | None = None,
    resume_from: TrainingState | None = None,
    finished: frozenset[str] = frozenset(),
) -> list[NetworkResult]:
    """Train ``specs`` (one network, or a pack trained together), measure ``plan``, write the store.

    Checkpoint weights are written as soon as training reaches them, so a
    trial resumed from ``resume_from`` reads the earlier ones back. A pack
    resumed from ``resume_from`` is the whole pack it was checkpointed with,
    so networks in ``finished`` are trained along, but their files are neither
    rewritten nor recorded again.
    """
    first = specs[0]
    network = structure(first, data.input_shape, data.n_classes)
    layers = layer_of_keys(registry.family(first.model).layers(network))
    for spec in specs:
        if spec.trial_id not in finished:
            store.write_bytes(layout.spec_path(spec.trial_id), spec.canonical_json())
    weight_rows: list[list[dict]] = [[] for _ in specs]

    def save_snapshot(k: int, epoch: int, state: StateDict) -> None:
        if specs[k].trial_id not in finished:
            weight_rows[k].extend(save_checkpoint(store, specs[k].trial_id, epoch, state, layers))

    snapshots: list[dict[int, StateDict]] = [{} for _ in specs]
    if resume_from is not None:
        done = [epoch for epoch in first.checkpoints if epoch <= resume_from.epoch]
        snapshots = [load_checkpoints(store, spec, placement.device, done) for spec in specs]
        for k, network in enumerate(snapshots):
            for epoch, state in sorted(network.items()):
                weight_rows[k].extend(checkpoint_rows(specs[k].trial_id, epoch, state, layers))
    if len(specs) == 1:
        resume = Resume(resume_from, snapshots[0]) if resume_from is not None else None
        networks = [
            train_network(first, data, placement.device, on_epoch, partial(save_snapshot, 0), resume,
                          graphs_enabled())
        ]
    else:
        pack_resume = PackResume(resume_from, snapshots) if resume_from is not None else None
        networks = train_pack(
            specs, data, placement.device, on_epoch, save_snapshot, pack_resume, graphs_enabled()
        )
    return [
        record_network(
            spec, plan, network, rows, data, store, sweep, placement, len(specs),
            resume_from.epoch if resume_from is not None else None,
        )
        for spec, network, rows in zip(specs, networks, weight_rows, strict=True)
        if spec.trial_id not in finished
    ]


def run_network(
    spec: TrialSpec,
    plan: MeasurementPlan,
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: EpochCallback | None = None,
) -> NetworkResult:
    """Train one network and write all its store files (:func:`run_networks` of one)."""
    [result] = run_networks([spec], plan, data, store, sweep, placement, on_epoch)
    return result


def spec_columns(spec: TrialSpec) -> dict:
    """The trial row's copies of the spec: every ``trials`` column named after a spec field
    (lists as lists), the optimizer by its name and its ``lr``."""
    values = spec.to_dict()
    row = {name: values[name] for name in TRIALS_SCHEMA.names if name in values}
    return {**row, "optimizer": spec.optimizer.name, "lr": spec.optimizer.lr}


@dataclass(frozen=True)
class NetworkResult:
    trial_row: dict
    swap_rows: list[dict]


def record_network(
    spec: TrialSpec,
    plan: MeasurementPlan,
    network: TrainedNetwork,
    weight_rows: list[dict],
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    pack_size: int,
    resumed_from_epoch: int | None = None,
) -> NetworkResult:
    """Measure ``plan`` on a trained network and write its index rows, trial row last.

    ``weight_rows`` describe its checkpoint files, already written;
    ``pack_size`` is how many networks were trained together with it.
    """
    trial_id = spec.trial_id
    swap_started = time.perf_counter()
    keys = wanted_keys(spec, plan, data.input_shape, data.n_classes)
    swap_rows = measure(spec, network.model, network.checkpoints, data, keys)
    swap_seconds = time.perf_counter() - swap_started
    movement = network_movement(spec, network.model, network.checkpoints)
    criticality = (
        network_criticality(spec, network.model, network.checkpoints, data, plan.criticality)
        if plan.criticality is not None else []
    )
    trained = network.checkpoints[spec.epochs]
    train_acc = evaluate(network.model, trained, data.x_train, data.y_train).test_acc
    baseline = {row["epoch"]: row for row in swap_rows if row["kind"] == "none" and row["recalibrate"] == 0}
    trial_row = {
        "trial_id": trial_id,
        "sweep": sweep,
        **spec_columns(spec),
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
        "config_id": spec.config_id,
        "pack_size": pack_size,
        "accelerator": placement.accelerator,
        "train_acc": train_acc,
        **cuda_columns(placement.device),
        "n_params": sum(parameter.numel() for parameter in network.model.parameters()),
        "factory_source": None if spec.factory is None else factory_source(spec.factory),
    }
    store.write_index("weights", trial_id, pa.Table.from_pylist(weight_rows))
    store.write_index("swaps", trial_id, pa.Table.from_pylist(swap_rows))
    store.write_index("layers", trial_id, pa.Table.from_pylist(movement))
    if criticality:
        store.write_index("criticality", trial_id, pa.Table.from_pylist(criticality))
    store.write_index("trials", trial_id, pa.Table.from_pylist([trial_row]))
    return NetworkResult(trial_row, swap_rows)
