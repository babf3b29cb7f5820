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
from importlib import metadata

import pyarrow as pa
import ray
import safetensors.torch
import torch
from torch import nn

from trainables.datasets import DatasetTensors
from trainables.models import tensor_layer
from trainables.spec import TrialSpec
from trainables.store import Store, spec_relpath, weights_relpath
from trainables.swaps import evaluate, swap_variants
from trainables.training import EpochCallback, StateDict, train_network


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
    relpath = weights_relpath(trial_id, epoch)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    metadata_ = {"trial_id": trial_id, "epoch": str(epoch)}
    store.write_bytes(relpath, safetensors.torch.save(tensors, metadata=metadata_))
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
            "path": relpath,
        }
        for key, tensor in tensors.items()
    ]


def measure_swaps(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], data: DatasetTensors
) -> list[dict]:
    rows = []
    for variant in swap_variants(spec, model, checkpoints):
        result = evaluate(model, variant.params, data.x_test, data.y_test)
        rows.append(
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
        )
    return rows


def run_network(
    spec: TrialSpec,
    data: DatasetTensors,
    store: Store,
    sweep: str,
    placement: Placement,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train one network and write all its store files; returns its trial row."""
    trial_id = spec.trial_id
    store.write_bytes(spec_relpath(trial_id), spec.canonical_json())
    network = train_network(spec, data, placement.device, on_epoch)
    layers = tensor_layer(network.model)
    weight_rows = [
        row
        for epoch, state in sorted(network.checkpoints.items())
        for row in save_checkpoint(store, trial_id, epoch, state, layers)
    ]
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
    }
    store.write_index("weights", trial_id, pa.Table.from_pylist(weight_rows))
    store.write_index("swaps", trial_id, pa.Table.from_pylist(swap_rows))
    store.write_index("trials", trial_id, pa.Table.from_pylist([trial_row]))
    return trial_row
