"""A tiny ResNet sweep end to end on a real Ray: two networks packed (vmap over stacked weights and
BatchNorm buffers), a step schedule, every swap kind, movement, criticality, the report and verify,
all through the generic paths; the store read back and checked independently. (Augmentation is
tests/test_recipes.py's and test_failures.py's: 4-pixel crops of 8x8 images leave a tiny ResNet at
chance after 3 epochs.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch
from torch.nn import functional as F

from orchestrator.catalog.verify import verify_store
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.report.assemble import write_report
from orchestrator.report.stats import layer_sort_key
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.models import registry
from trainables.store import Store, layout
from trainables.store.schemas import CRITICALITY_SCHEMA, LAYERS_SCHEMA, SWAPS_SCHEMA, TRIALS_SCHEMA

KINDS = ["reinit", "rerandomize", "transplant", "interpolate"]


def table(root: Path, name: str, schema):
    return ds.dataset(root / "index" / name, schema=schema, format="parquet").to_table().to_pylist()


@pytest.fixture(scope="module")
def conv_sweep(local_ray, tmp_path_factory):
    store = tmp_path_factory.mktemp("conv") / "store"
    config = parse_config(tiny_raw_config(store, **{
        "name": "conv", "dataset": "synthetic-images", "model": "resnet20", "widths": [[4, 4, 8]],
        "seeds": 2, "pack": 2, "epochs": 3, "checkpoints": [0, 1, 3], "batch_size": 32,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "milestones": [2]}, "swaps": KINDS,
        "alphas": [0, 0.5, 1], "criticality": {"alphas": 2, "sigmas": 2, "sigma_max": 0.01,
                                                "noise_samples": 2, "subset": 64},
    }))
    outcome = run_sweep(config, log=lambda line: None)
    return config, store, outcome


def test_a_packed_resnet_sweep_trains_and_measures_every_layer(conv_sweep):
    config, store, outcome = conv_sweep
    assert (outcome.completed, outcome.failed) == (2, 0)
    specs = expand_grid(config)
    assert specs[0].norm == "batch" and specs[0].data_mean == (0.0, 0.0, 0.0)  # the conv default, per channel
    trials = table(store, "trials", TRIALS_SCHEMA)
    assert [row["pack_size"] for row in trials] == [2, 2]
    with torch.device("meta"):
        network = registry.spec_network(specs[0], (3, 8, 8), 4)
    layers = [layer.name for layer in registry.family("resnet20").layers(network)]
    assert len(layers) == 22 and "layer3.0.downsample" in layers
    assert {row["n_params"] for row in trials} == {sum(p.numel() for p in network.parameters())}
    swaps = table(store, "swaps", SWAPS_SCHEMA)
    for trial in trials:
        rows = [row for row in swaps if row["trial_id"] == trial["trial_id"]]
        # none at 3 checkpoints; per layer reinit to 2, rerandomize, transplant, interpolate at 3 alphas
        assert len(rows) == 3 + len(layers) * (2 + 1 + 1 + 3)
        measured = {(row["kind"], row["layer"]) for row in rows}
        assert {(kind, layer) for kind in KINDS for layer in layers} <= measured
        assert all(0.0 <= row["test_acc"] <= 1.0 and row["n_test"] == 256 for row in rows)
        interpolated = {row["alpha"]: row["test_acc"] for row in rows
                        if row["kind"] == "interpolate" and row["layer"] == "layer2.0.downsample"}
        reinit = next(row["test_acc"] for row in rows if row["kind"] == "reinit"
                      and row["layer"] == "layer2.0.downsample" and row["epoch"] == 0)
        assert interpolated[0.0] == reinit and interpolated[1.0] == trial["test_acc"]
    movement = table(store, "layers", LAYERS_SCHEMA)
    assert {row["layer"] for row in movement} == set(layers)
    assert len(table(store, "criticality", CRITICALITY_SCHEMA)) == 2 * len(layers)


def test_the_trained_accuracy_is_the_network_in_eval_mode_with_its_running_statistics(conv_sweep):
    config, store, _ = conv_sweep
    spec = expand_grid(config)[0]
    data = load_dataset("synthetic-images").tensors("cpu")
    weights = safetensors.torch.load(Store.open(str(store)).read_bytes(layout.weights_path(spec.trial_id, 3)))
    assert int(weights["layer1.0.bn1.num_batches_tracked"]) == 3 * 12  # 384 samples in batches of 32
    network = registry.spec_network(spec, (3, 8, 8), 4)
    network.load_state_dict(weights)
    with torch.no_grad():
        logits = network.eval()(data.x_test)
    row = next(r for r in table(store, "trials", TRIALS_SCHEMA) if r["trial_id"] == spec.trial_id)
    assert row["test_acc"] == (logits.argmax(1) == data.y_test).float().mean().item()
    assert row["test_loss"] == pytest.approx(F.cross_entropy(logits, data.y_test).item(), rel=1e-5)
    assert row["test_acc"] > 0.5  # 4 classes


def test_the_report_and_verify_read_the_conv_store(conv_sweep):
    _, store, _ = conv_sweep
    written = write_report(Store.open(str(store)))
    names = {path.rsplit("/", 1)[-1] for path in written}
    assert {"stats.csv", "report.md", "report.html"} <= names
    report = (store / "report" / "report.md").read_text()
    assert "layer2.0.downsample" in report and "resnet20" in report
    verification = verify_store(Store.open(str(store)))
    assert verification.problems == [] and verification.trials == 2


def test_layers_carry_their_forward_position_and_the_report_orders_by_it(conv_sweep, tmp_path):
    config, store, _ = conv_sweep
    with torch.device("meta"):
        network = registry.spec_network(expand_grid(config)[0], (3, 8, 8), 4)
    family = [(layer.name, layer.index, layer.module_type)
              for layer in registry.family("resnet20").layers(network)]
    forward = [name for name, _, _ in family]
    assert forward != sorted(forward, key=layer_sort_key)  # by name, fc would come before layer1.0.conv1
    movement = table(store, "layers", LAYERS_SCHEMA)
    assert {(r["layer"], r["layer_index"], r["module_type"]) for r in movement} == set(family)
    assert {r["module_type"] for r in movement if r["layer"] == "fc"} == {"linear"}
    write_report(Store.open(str(store)), out_dir=str(tmp_path / "new"), sweep="conv")
    stats = pd.read_csv(tmp_path / "new" / "stats.csv")
    reinit0 = stats[(stats["kind"] == "reinit") & (stats["epoch"] == 0)]
    assert list(reinit0["layer"]) == forward and list(reinit0["layer_index"]) == list(range(22))
    assert list(reinit0["depth"]) == pytest.approx([i / 21 for i in range(22)])
    # A store written before the layers table had layer_index and module_type reads the same.
    old = tmp_path / "old"
    shutil.copytree(store, old, ignore=shutil.ignore_patterns("report", "tune"))
    for path in (old / "index" / "layers").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["layer_index", "module_type"]), path)
    write_report(Store.open(str(old)), out_dir=str(tmp_path / "old-report"), sweep="conv")
    for name in ("stats.csv", "layer_stats.csv"):
        assert (tmp_path / "old-report" / name).read_text() == (tmp_path / "new" / name).read_text()
