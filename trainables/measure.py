"""Measuring swaps on a network's weights: at the end of training, or later from the store.

Rows measured when a network is trained go to ``index/swaps/<trial_id>.parquet``;
rows added later (``layerswap analyze``, or a sweep whose plan grew) go to
``index/swaps/<trial_id>-<batch>.parquet``, ``<batch>`` being the first 8 hex
characters of the sha256 of the sorted keys the file holds. No existing file
is ever rewritten: a writer measures only keys the trial does not have yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import pyarrow as pa
import safetensors.torch
import torch
from torch import nn

from trainables.datasets import DatasetTensors
from trainables.models import build_model, layer_tensors
from trainables.plan import MeasurementPlan, SwapKey, plan_keys
from trainables.spec import TrialSpec, canonical_bytes
from trainables.store import Store, weights_relpath
from trainables.swaps import evaluate_variants, swap_variants

StateDict = dict[str, torch.Tensor]


def network_layers(spec: TrialSpec, n_features: int, n_classes: int) -> tuple[str, ...]:
    """The layer names of ``spec``'s network (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return tuple(layer_tensors(build_model(spec.model, n_features, spec.widths, n_classes)))


def wanted_keys(spec: TrialSpec, plan: MeasurementPlan, n_features: int, n_classes: int) -> list[SwapKey]:
    """Every key ``plan`` asks of ``spec``'s network."""
    return plan_keys(plan, network_layers(spec, n_features, n_classes), spec.checkpoints)


def _sortable(key: SwapKey) -> tuple:
    return tuple((value is None, "" if value is None else value) for value in key)


def batch_relpath(trial_id: str, keys: Iterable[SwapKey]) -> str:
    """Where a later batch of a trial's rows goes: named by the hash of its sorted keys."""
    body = canonical_bytes(sorted(keys, key=_sortable))
    return f"index/swaps/{trial_id}-{hashlib.sha256(body).hexdigest()[:8]}.parquet"


def measure(
    spec: TrialSpec,
    model: nn.Module,
    checkpoints: dict[int, StateDict],
    data: DatasetTensors,
    keys: Sequence[SwapKey],
) -> list[dict]:
    """The swaps rows of ``keys`` for one network, evaluated on the full test set."""
    variants = list(swap_variants(spec, model, checkpoints, keys))
    results = evaluate_variants(model, variants, data.x_test, data.y_test)
    return [
        {
            "trial_id": spec.trial_id,
            "kind": kind,
            "layer": layer,
            "epoch": epoch,
            "alpha": alpha,
            "draw": draw,
            "test_acc": result.test_acc,
            "test_loss": result.test_loss,
            "n_test": result.n_test,
        }
        for (kind, layer, epoch, alpha, draw), result in zip(keys, results, strict=True)
    ]


def load_checkpoints(
    store: Store, spec: TrialSpec, device: torch.device, epochs: Iterable[int] | None = None
) -> dict[int, StateDict]:
    """The stored weights of ``spec``'s checkpoints (all, or ``epochs``) on ``device``."""
    def load(epoch: int) -> StateDict:
        stored = safetensors.torch.load(store.read_bytes(weights_relpath(spec.trial_id, epoch)))
        return {key: value.to(device) for key, value in stored.items()}

    return {epoch: load(epoch) for epoch in (spec.checkpoints if epochs is None else epochs)}


def measure_stored(
    store: Store, spec: TrialSpec, keys: Sequence[SwapKey], data: DatasetTensors, device: torch.device
) -> int:
    """Measure ``keys`` (keys the trial lacks) from its stored weights; write one batch file.

    Returns the number of rows written (0 when ``keys`` is empty, or when a
    concurrent writer already wrote the same batch).
    """
    if not keys:
        return 0
    relpath = batch_relpath(spec.trial_id, keys)
    if store.exists(relpath):
        return 0
    with torch.device("meta"):
        structure = build_model(spec.model, data.x_train.shape[1], spec.widths, data.n_classes)
    checkpoints = load_checkpoints(store, spec, device)
    rows = measure(spec, structure, checkpoints, data, keys)
    store.write_table(relpath, "swaps", pa.Table.from_pylist(rows))
    return len(rows)
