"""The one order of layers: stats, views and the depth axis by ``layer_index`` (forward position),
never by name, from the layers table or, for stores written before it had the column, the spec."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.report import figures
from orchestrator.report.layer_order import NetworkLayers, layer_order, with_layer_columns
from orchestrator.report.stats import compute_stats, config_views, layer_sort_key
from tests.test_stats import swaps_table, trial_table
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.store.schemas import LAYERS_SCHEMA

RESNET110 = TrialSpec(
    dataset="synthetic-images", data_mean=(0.0, 0.0, 0.0), data_std=(1.0, 1.0, 1.0), model="resnet110",
    widths=(2, 2, 2), seed=0, epochs=2, batch_size=32, optimizer=OptimizerSpec("sgd", 0.1),
    checkpoints=(0, 2), norm="batch",
)
# ResNet-110: the stem, 3 stages of 18 blocks of two convs, a shortcut in stages 2 and 3, fc:
# layer1.{b}.conv{c} is 1 + 2b + (c - 1); stage 2 starts at 37 (its first block has 3 layers).
POSITIONS = {"conv1": 0, "layer1.9.conv2": 20, "layer1.10.conv1": 21, "layer2.0.conv1": 37,
             "layer2.0.downsample": 39, "layer3.17.conv2": 110, "fc": 111}
N_LAYERS = 112


def resnet_trial(trial_id: str = "r0", seed: int = 0) -> pa.Table:
    return trial_table(trial_id, widths=RESNET110.widths, seed=seed, n_classes=4,
                       config_id=RESNET110.config_id, spec_json=RESNET110.canonical_json().decode())


def layers_rows(trial_id: str, indexed: bool) -> pa.Table:
    rows = [
        {"trial_id": trial_id, "epoch": 0, "layer": layer, "n_params": 1, "norm": 1.0,
         "layer_index": index if indexed else None, "module_type": "conv" if indexed else None}
        for layer, index in POSITIONS.items()
    ]
    return pa.Table.from_pylist(rows, schema=LAYERS_SCHEMA)


def test_a_resnet110_reports_its_layers_in_forward_order_not_by_name() -> None:
    trials = pa.concat_tables([resnet_trial("r0", 0), resnet_trial("r1", 1)])
    scrambled = sorted(POSITIONS, reverse=True)
    swaps = pa.concat_tables([
        swaps_table(t, [("none", None, 2, 0.9)] + [("reinit", layer, 0, 0.5) for layer in scrambled])
        for t in ("r0", "r1")
    ])
    networks = layer_order(trials, LAYERS_SCHEMA.empty_table())  # an old store: from the spec's family
    assert len(networks[RESNET110.config_id].names) == N_LAYERS
    stats = compute_stats(trials, swaps, networks=networks)
    reinit = stats[stats["kind"] == "reinit"]
    forward = sorted(POSITIONS, key=POSITIONS.__getitem__)
    assert list(reinit["layer"]) == forward
    assert sorted(POSITIONS, key=layer_sort_key) != forward  # by name fc and layer1.10 come too early
    assert list(reinit["layer_index"]) == [POSITIONS[layer] for layer in forward]
    assert list(reinit["depth"]) == pytest.approx([POSITIONS[layer] / (N_LAYERS - 1) for layer in forward])
    assert stats.loc[stats["kind"] == "none", "layer_index"].isna().all()
    (view,) = config_views(stats)
    assert view.layers == tuple(forward)
    profile = figures.drop_profile(view, "reinit", 0, "resnet110")
    # placed by position in the whole network, not evenly over the 7 layers measured
    assert profile.depth == pytest.approx(np.array([POSITIONS[layer] for layer in forward]) / 111)


def test_the_layers_table_gives_the_order_and_old_rows_are_filled_from_the_spec() -> None:
    trials = resnet_trial()
    from_table = layer_order(trials, layers_rows("r0", indexed=True))[RESNET110.config_id]
    assert from_table.names == tuple(sorted(POSITIONS, key=POSITIONS.__getitem__))  # only what it holds
    networks = layer_order(trials, layers_rows("r0", indexed=False))
    filled = with_layer_columns(layers_rows("r0", indexed=False), trials, networks)
    names = filled.column("layer").to_pylist()
    assert dict(zip(names, filled.column("layer_index").to_pylist(), strict=True)) == POSITIONS
    types = dict(zip(names, filled.column("module_type").to_pylist(), strict=True))
    assert types["fc"] == "linear" and types["layer2.0.downsample"] == types["conv1"] == "conv"


def test_without_a_known_order_layers_sort_by_name_after_the_known_ones() -> None:
    trials = trial_table("m0")  # no spec, no layers rows: nothing tells the position
    assert layer_order(trials, LAYERS_SCHEMA.empty_table()) == {}
    network = NetworkLayers(("fc1", "fc2"), ("linear", "linear"))
    stats = compute_stats(
        trials, swaps_table("m0", [("reinit", layer, 0, 0.5) for layer in ("fc10", "extra", "fc2", "fc1")]),
        networks={"cfg-8-4": network},
    )
    assert list(stats["layer"]) == ["fc1", "fc2", "extra", "fc10"]
    assert list(stats["depth"].iloc[:2]) == [0.0, 1.0] and stats["depth"].iloc[2:].isna().all()
