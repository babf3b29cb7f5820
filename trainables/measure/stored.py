"""Measuring a network's weights: at the end of training, or later from the store.

Rows measured when a network is trained go to ``index/swaps/<trial_id>.parquet``;
rows added later (``layerswap analyze``, or a sweep whose plan grew) go to
``index/swaps/<trial_id>-<batch>.parquet``, ``<batch>`` being the first 8 hex
characters of the sha256 of the sorted keys the file holds. No existing file
is ever rewritten: a writer measures only keys the trial does not have yet.

The same holds for the other measurement tables: ``index/layers/<trial_id>.parquet``
(weight movement, :mod:`trainables.measure.movement`, one file per network, written
once) and ``index/criticality/<trial_id>[-<batch>].parquet``
(:mod:`trainables.measure.criticality`; a row is keyed by (trial_id, layer) and the
settings, :func:`criticality_key`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import torch
from torch import nn

from trainables.data.tensors import DatasetTensors
from trainables.measure.checked_weights import load_checked
from trainables.measure.criticality import criticality_rows
from trainables.measure.movement import movement_rows
from trainables.measure.recalibrate import has_batchnorm, recalibrated, recalibration_samples
from trainables.measure.row_keys import (
    Missing,
    batch_relpath,
    criticality_batch_relpath,
    criticality_key,
    movement_batch_relpath,
)
from trainables.measure.swaps import evaluate_variants, swap_variants
from trainables.models import registry
from trainables.models.family import StateDict
from trainables.models.units import measured_units
from trainables.plan import DEFAULT_GROUPS, CriticalitySettings, MeasurementPlan, SwapKey, plan_keys
from trainables.spec import TrialSpec
from trainables.store import Store, layout


def structure(spec: TrialSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``spec``'s network on the meta device (no memory, no init): its modules and layers, no values."""
    with torch.device("meta"):
        return registry.spec_network(spec, input_shape, n_classes)


def network_layers(
    spec: TrialSpec, input_shape: tuple[int, ...], n_classes: int, levels: Iterable[str] = DEFAULT_GROUPS
) -> tuple[str, ...]:
    """The names measured on ``spec``'s network: its layers in forward order, then its groups of
    ``levels`` (:func:`trainables.models.units.measured_units`)."""
    units = measured_units(registry.family(spec.model), structure(spec, input_shape, n_classes), levels)
    return tuple(unit.name for unit in units)


@dataclass(frozen=True)
class Wanted:
    """What a plan asks of one network: the ``units`` it measures (layer names in forward order,
    then the groups the plan asks for) and every swap ``key``."""

    units: tuple[str, ...]
    keys: list[SwapKey]


def wanted(spec: TrialSpec, plan: MeasurementPlan, input_shape: tuple[int, ...], n_classes: int) -> Wanted:
    """What ``plan`` asks of ``spec``'s network, its groups included where ``plan`` asks for them
    (recalibrated keys only where it has a BatchNorm); its structure built once for both."""
    model = structure(spec, input_shape, n_classes)
    units = tuple(unit.name for unit in measured_units(registry.family(spec.model), model, plan.groups))
    return Wanted(units, plan_keys(plan, units, spec.checkpoints, has_batchnorm(model)))


def measure(
    spec: TrialSpec,
    model: nn.Module,
    checkpoints: dict[int, StateDict],
    data: DatasetTensors,
    keys: Sequence[SwapKey],
) -> list[dict]:
    """The swaps rows of ``keys`` for one network, evaluated on the full test set; a key with
    ``recalibrate`` N > 0 after its BatchNorm statistics are re-estimated on N training samples."""
    variants = list(swap_variants(spec, model, checkpoints, keys))
    for n in sorted({key[5] for key in keys} - {0}):
        samples = recalibration_samples(data.x_train, spec.seed, n)
        variants = [
            dataclasses.replace(variant, params=recalibrated(model, variant.params, samples, spec.batch_size))
            if key[5] == n else variant
            for key, variant in zip(keys, variants, strict=True)
        ]
    results = evaluate_variants(registry.family(spec.model), model, variants, data.x_test, data.y_test)
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
            "recalibrate": recalibrate,
        }
        for (kind, layer, epoch, alpha, draw, recalibrate), result in zip(keys, results, strict=True)
    ]


def network_movement(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], units: Iterable[str] | None = None
) -> list[dict]:
    """The ``layers`` rows of ``units`` (layer and group names; default every layer) of a network
    from its checkpoints."""
    family = registry.family(spec.model)
    if units is None:
        return movement_rows(spec.trial_id, checkpoints, family.layers(model))
    by_name = {unit.name: unit for unit in measured_units(family, model)}
    return movement_rows(spec.trial_id, checkpoints, [by_name[name] for name in units])


def network_criticality(
    spec: TrialSpec,
    model: nn.Module,
    checkpoints: dict[int, StateDict],
    data: DatasetTensors,
    settings: CriticalitySettings,
    layers: Sequence[str] | None = None,
) -> list[dict]:
    """The ``criticality`` rows of ``layers`` (layer or group names; default every layer) of a network."""
    return criticality_rows(
        spec.trial_id, spec.seed, registry.family(spec.model), model, checkpoints[0],
        checkpoints[spec.epochs], data.x_train, data.y_train, settings, layers,
    )


def load_checkpoints(
    store: Store, spec: TrialSpec, device: torch.device, epochs: Iterable[int] | None = None
) -> dict[int, StateDict]:
    """The stored weights of ``spec``'s checkpoints (all, or ``epochs``) on ``device``, each file
    checked against ``index/weights`` first (:mod:`trainables.measure.checked_weights`: a finished
    network's damaged or missing file raises WeightsDamaged naming it)."""
    return load_checked(store, spec, device, epochs)


def checkpoints_needed(spec: TrialSpec, missing: Missing) -> tuple[int, ...]:
    """The checkpoint epochs measuring ``missing`` reads: epoch 0 and the last (every swap starts
    from one of them), the epoch of each key, and every checkpoint for weight movement."""
    if missing.movement:
        return tuple(spec.checkpoints)
    epochs = {0, spec.epochs} | {key[2] for key in missing.keys if key[2] is not None}
    return tuple(sorted(epochs))


def measure_stored(
    store: Store, spec: TrialSpec, missing: Missing, data: DatasetTensors, device: torch.device
) -> int:
    """Measure what the network lacks (``missing``) from its stored weights.

    Writes one swaps batch file, the layers file, one criticality batch file,
    each only where something is missing and no concurrent writer already
    wrote it. Returns the number of rows written.
    """
    if not missing:
        return 0
    model = structure(spec, data.input_shape, data.n_classes)
    checkpoints = load_checkpoints(store, spec, device, checkpoints_needed(spec, missing))
    written = 0
    relpath = batch_relpath(spec.trial_id, missing.keys)
    if missing.keys and not store.exists(relpath):
        rows = measure(spec, model, checkpoints, data, missing.keys)
        store.write_table(relpath, "swaps", pa.Table.from_pylist(rows))
        written += len(rows)
    movement, relpath = missing.movement, layout.index_path("layers", spec.trial_id)
    if movement and store.exists(relpath):
        # The network's movement file is there (written before groups were asked for, or by a
        # concurrent writer): its groups go to a batch of their own, its layers are stored.
        units = {unit.name: unit for unit in measured_units(registry.family(spec.model), model)}
        movement = tuple(name for name in movement if units[name].level != "layer")
        relpath = movement_batch_relpath(spec.trial_id, movement)
    if movement and not store.exists(relpath):
        rows = network_movement(spec, model, checkpoints, movement)
        store.write_table(relpath, "layers", pa.Table.from_pylist(rows))
        written += len(rows)
    if missing.criticality_layers and missing.settings is not None:
        n_train = data.x_train.shape[0]
        keys = [criticality_key(layer, missing.settings, n_train) for layer in missing.criticality_layers]
        relpath = criticality_batch_relpath(spec.trial_id, keys)
        if not store.exists(relpath):
            rows = network_criticality(
                spec, model, checkpoints, data, missing.settings, missing.criticality_layers
            )
            store.write_table(relpath, "criticality", pa.Table.from_pylist(rows))
            written += len(rows)
    return written
