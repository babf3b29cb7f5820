"""One network, end to end: train, save checkpoints, measure every swap, write the store.

Write order: spec.json, the weights files, then the weights, swaps, layers
(weight movement) and criticality (when the plan asks for it) index rows,
and the trial row last: a trial row means every other file of that
trial is complete. The writes go through a :class:`StoreWriter`: in a Tune
trial one helper thread writes them, in that order, while the trial trains
the next pack; called without one, everything is written before the call returns.
"""

from __future__ import annotations

import json
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
from trainables.measure.checked_weights import tensor_sha256
from trainables.measure.evaluation import evaluate
from trainables.measure.stored import (
    load_checkpoints,
    measure,
    network_criticality,
    network_movement,
    structure,
    wanted,
)
from trainables.models import registry
from trainables.models.custom import factory_source
from trainables.models.family import StateDict, layer_of_keys
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import TABLE_SCHEMAS, TRIALS_SCHEMA
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
from trainables.worker.store_writer import StoreWriter, Written
from trainables.worker.work_times import Stopwatch, WorkTimes


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


def with_sorted_metadata(data: bytes) -> bytes:
    """safetensors bytes whose header lists its ``__metadata__`` keys in sorted order.

    safetensors writes that map in hash order, which changes from process to process, so the
    same tensors would give files of different bytes. The header (8-byte little-endian length,
    then JSON padded with spaces to a multiple of 8) is written again in a fixed order; tensor
    entries keep theirs, and their offsets are relative to the data that follows, untouched.
    """
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata_ = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata_.items()))} if metadata_ else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def save_checkpoint(
    store: Store, trial_id: str, epoch: int, state: StateDict, layers: dict[str, str]
) -> list[dict]:
    """Write one epoch's safetensors file (metadata ``epoch``, ``trial_id``, in that order);
    return its weights index rows.

    ``state`` must not change meanwhile (a checkpoint's copies; a helper thread may run this).
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    metadata_ = {"trial_id": trial_id, "epoch": str(epoch)}
    data = with_sorted_metadata(safetensors.torch.save(tensors, metadata=metadata_))
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
    writer: StoreWriter | None = None,
    times: WorkTimes | None = None,
) -> list[NetworkResult]:
    """Train ``specs`` (one network, or a pack trained together), measure ``plan``, write the store.

    Checkpoint weights are written as soon as training reaches them, so a
    trial resumed from ``resume_from`` reads the earlier ones back. A pack
    resumed from ``resume_from`` is the whole pack it was checkpointed with,
    so networks in ``finished`` are trained along, but their files are neither
    rewritten nor recorded again. With a background ``writer`` the files may
    still be being written when this returns: each result's ``written``
    settles them. ``times`` (optional) adds up the seconds spent training,
    measuring and writing.
    """
    writer = writer or StoreWriter(store, background=False, times=times)
    first = specs[0]
    network = structure(first, data.input_shape, data.n_classes)
    layers = layer_of_keys(registry.family(first.model).layers(network))
    written = [writer.network() for _ in specs]
    for spec, handle in zip(specs, written, strict=True):
        if spec.trial_id not in finished:
            writer.submit(handle, partial(write_spec, spec))
    weight_rows: list[list[dict]] = [[] for _ in specs]

    def save_snapshot(k: int, epoch: int, state: StateDict) -> None:
        if specs[k].trial_id not in finished:
            writer.submit(written[k], partial(write_checkpoint, specs[k].trial_id, epoch, state, layers,
                                              weight_rows[k]))

    snapshots: list[dict[int, StateDict]] = [{} for _ in specs]
    if resume_from is not None:
        done = [epoch for epoch in first.checkpoints if epoch <= resume_from.epoch]
        snapshots = [load_checkpoints(store, spec, placement.device, done) for spec in specs]
        for k, network in enumerate(snapshots):
            for epoch, state in sorted(network.items()):
                weight_rows[k].extend(checkpoint_rows(specs[k].trial_id, epoch, state, layers))
    with Stopwatch(times, "train"):
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
            resume_from.epoch if resume_from is not None else None, writer, handle, times,
        )
        for spec, network, rows, handle in zip(specs, networks, weight_rows, written, strict=True)
        if spec.trial_id not in finished
    ]


def write_spec(spec: TrialSpec, store: Store) -> None:
    store.write_bytes(layout.spec_path(spec.trial_id), spec.canonical_json())


def write_checkpoint(
    trial_id: str, epoch: int, state: StateDict, layers: dict[str, str], rows: list[dict], store: Store
) -> None:
    """Write one checkpoint's file and add its weights index rows to ``rows``."""
    rows.extend(save_checkpoint(store, trial_id, epoch, state, layers))


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
    """A measured network: its trial row and swap rows, and the handle of its writes (settled once
    :meth:`Written.result` returns; a synchronous writer's are settled already)."""

    trial_row: dict
    swap_rows: list[dict]
    written: Written


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
    writer: StoreWriter | None = None,
    written: Written | None = None,
    times: WorkTimes | None = None,
) -> NetworkResult:
    """Measure ``plan`` on a trained network and write its index rows, trial row last.

    ``weight_rows`` describe its checkpoint files (complete once the writes
    submitted before are done); ``pack_size`` is how many networks were
    trained together with it. The rows are written through ``writer`` (default:
    at once) as part of ``written``. A network that diverged is recorded as
    :func:`diverged_tables` says.
    """
    writer = writer or StoreWriter(store, background=False, times=times)
    written = written if written is not None else writer.network()
    if network.diverged_epoch is not None:
        trial_row, tables = diverged_tables(spec, network, weight_rows, data, sweep, placement, pack_size,
                                            resumed_from_epoch)
    else:
        with Stopwatch(times, "measure"):
            swap_started = time.perf_counter()
            asked = wanted(spec, plan, data.input_shape, data.n_classes)
            swap_rows = measure(spec, network.model, network.checkpoints, data, asked.keys)
            swap_seconds = time.perf_counter() - swap_started
            movement = network_movement(spec, network.model, network.checkpoints, asked.units)
            criticality = (
                network_criticality(spec, network.model, network.checkpoints, data, plan.criticality,
                                    asked.units)
                if plan.criticality is not None else []
            )
            trained = network.checkpoints[spec.epochs]
            train_acc = evaluate(network.model, trained, data.x_train, data.y_train).test_acc
        baseline = {  # the network as trained: its stored BatchNorm statistics
            row["epoch"]: row for row in swap_rows if row["kind"] == "none" and row["recalibrate"] == 0
        }
        trial_row = trial_row_of(
            spec, network, data, sweep, placement, pack_size, resumed_from_epoch,
            test_acc=baseline[spec.epochs]["test_acc"], test_loss=baseline[spec.epochs]["test_loss"],
            init_test_acc=baseline[0]["test_acc"], swap_seconds=swap_seconds, train_acc=train_acc,
        )
        tables = {"weights": weight_rows, "swaps": swap_rows, "layers": movement, "criticality": criticality}
    for table, rows in tables.items():
        if rows or table in ("weights", "swaps"):
            writer.submit(written, partial(write_rows, table, spec.trial_id, rows))
    writer.submit(written, partial(write_trial_row, trial_row, written))
    return NetworkResult(trial_row, tables["swaps"], written)


def diverged_tables(
    spec: TrialSpec,
    network: TrainedNetwork,
    weight_rows: list[dict],
    data: DatasetTensors,
    sweep: str,
    placement: Placement,
    pack_size: int,
    resumed_from_epoch: int | None,
) -> tuple[dict, dict[str, list[dict]]]:
    """The trial row and index rows of a network whose training loss became non-finite: its
    checkpoints before that epoch, no swaps and no movement (there is no trained network to
    measure), and a trial row with ``status`` diverged, the epoch, NaN trained accuracies and the
    epoch-0 accuracy."""
    initial = evaluate(network.model, network.checkpoints[0], data.x_test, data.y_test)
    nan = float("nan")
    trial_row = trial_row_of(
        spec, network, data, sweep, placement, pack_size, resumed_from_epoch,
        test_acc=nan, test_loss=nan, init_test_acc=initial.test_acc, swap_seconds=0.0, train_acc=nan,
    )
    return trial_row, {"weights": weight_rows, "swaps": []}


def trial_row_of(
    spec: TrialSpec,
    network: TrainedNetwork,
    data: DatasetTensors,
    sweep: str,
    placement: Placement,
    pack_size: int,
    resumed_from_epoch: int | None,
    **measured: float | None,
) -> dict:
    """A network's trial row: its spec, where and how it was trained, and the ``measured`` columns
    (test_acc, test_loss, init_test_acc, swap_seconds, train_acc); ``status`` says whether it diverged."""
    return {
        "trial_id": spec.trial_id,
        "sweep": sweep,
        **spec_columns(spec),
        "spec_json": spec.canonical_json().decode("utf-8"),
        **measured,
        "train_seconds": network.train_seconds,
        "device": str(placement.device),
        "node_id": placement.node_id,
        "hostname": placement.hostname,
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        "package_version": package_version(),
        "finished_at": datetime.now(UTC),
        "n_classes": data.n_classes,
        "resumed_from_epoch": resumed_from_epoch,
        "config_id": spec.config_id,
        "pack_size": pack_size,
        "accelerator": placement.accelerator,
        **cuda_columns(placement.device),
        "status": "ok" if network.diverged_epoch is None else "diverged",
        "diverged_epoch": network.diverged_epoch,
        "n_params": sum(parameter.numel() for parameter in network.model.parameters()),
        "factory_source": None if spec.factory is None else factory_source(spec.factory),
    }


def write_rows(table: str, trial_id: str, rows: list[dict], store: Store) -> None:
    """One index file of ``rows`` (an empty swaps file has the table's schema)."""
    table_rows = pa.Table.from_pylist(rows) if rows else TABLE_SCHEMAS[table].empty_table()
    store.write_index(table, trial_id, table_rows)


def write_trial_row(row: dict, written: Written, store: Store) -> None:
    """The trial row, last, with the seconds its network's other files took to write."""
    row = {**row, "finished_at": datetime.now(UTC), "write_seconds": written.seconds}
    store.write_index("trials", row["trial_id"], pa.Table.from_pylist([row]))
