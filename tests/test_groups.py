"""Groups of layers swapped together (DESIGN.md, "Layers and layer groups"): residual blocks and
stages measured as one unit by every kind, movement and criticality; a group of one layer is not
measured again; groups asked for later (``analyze --groups``) add rows without rewriting any."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import safetensors.torch
import torch

from orchestrator import open_store
from orchestrator.catalog.verify import verify_store
from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from orchestrator.report.assemble import write_report
from orchestrator.run.analyze import analyze_store
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.measure.evaluation import evaluate
from trainables.measure.swaps import swap_variants
from trainables.models import registry
from trainables.models.architectures import BuildOptions
from trainables.models.units import measured_units
from trainables.plan import MeasurementPlan
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import CRITICALITY_SCHEMA, LAYERS_SCHEMA, SWAPS_SCHEMA, TRIALS_SCHEMA


def table(root: Path, name: str, schema) -> list[dict]:
    return ds.dataset(root / "index" / name, schema=schema, format="parquet").to_table().to_pylist()


def built(model: str, widths: tuple[int, ...], norm: str = "batch") -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build_network(model, (3, 8, 8), widths, 4, BuildOptions(norm=norm))


def test_a_resnets_blocks_and_stages_are_units_holding_exactly_their_layers_tensors() -> None:
    network = built("resnet20", (4, 4, 8))
    family = registry.family("resnet20")
    units = {unit.name: unit for unit in measured_units(family, network)}
    layers = [unit for unit in units.values() if unit.level == "layer"]
    assert len(layers) == 22 and [u.index for u in layers] == list(range(22))  # 2 shortcuts
    blocks = [name for name, unit in units.items() if unit.level == "block"]
    stages = [name for name, unit in units.items() if unit.level == "stage"]
    assert blocks == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert stages == ["layer1", "layer2", "layer3"]
    assert not {layer.name for layer in layers} & set(blocks + stages)  # names never collide
    block = units["layer2.0"]  # its two convs, their BatchNorms and the downsampling shortcut
    expected = [key for key in network.state_dict() if key.startswith("layer2.0.")]
    assert sorted(block.keys) == sorted(expected)
    assert block.parameters == tuple(k for k in expected if "running" not in k and "num_batches" not in k)
    assert block.index == units["layer2.0.conv1"].index and block.module_type == "block"
    stage = units["layer3"]
    assert sorted(stage.keys) == sorted(key for key in network.state_dict() if key.startswith("layer3."))
    # only the levels asked for; single layers always
    assert [u.name for u in measured_units(family, network, ("layer",))] == [u.name for u in layers]
    assert [u.level for u in measured_units(family, network, ("layer", "stage"))].count("block") == 0


def test_a_group_of_one_layer_is_not_a_unit_of_its_own() -> None:
    vgg = built("vgg11", (4, 4, 8, 8, 8))  # convs per stage 1, 1, 2, 2, 2
    units = measured_units(registry.family("vgg11"), vgg)
    assert [u.name for u in units if u.level == "stage"] == ["stage3", "stage4", "stage5"]
    cnn = built("cnn", (4, 6))  # every block and stage one conv
    assert [u.level for u in measured_units(registry.family("cnn"), cnn)] == ["layer"] * 3
    mlp = built("mlp", (8,), norm="none")
    assert len(measured_units(registry.family("mlp"), mlp)) == 2


def test_a_group_variant_swaps_every_tensor_of_the_group_and_nothing_else() -> None:
    spec = TrialSpec(dataset="synthetic-images", data_mean=(0.0, 0.0, 0.0), data_std=(1.0, 1.0, 1.0),
                     model="resnet20", widths=(4, 4, 8), seed=3, epochs=1, batch_size=32,
                     optimizer=OptimizerSpec("sgd", 0.1), checkpoints=(0, 1), norm="batch")
    model = registry.spec_network(spec, (3, 8, 8), 4)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trained = {k: v + 1 if v.is_floating_point() else v + 5 for k, v in initial.items()}
    keys = [("reinit", "layer3.0", 0, None, None, 0), ("rerandomize", "layer3.0", None, None, 0, 0),
            ("transplant", "layer2", 1, None, None, 0)]
    reinit, fresh, transplant = swap_variants(spec, model, {0: initial, 1: trained}, keys)
    group = [k for k in initial if k.startswith("layer3.0.")]
    for key in initial:
        swapped = key in group and not key.endswith("num_batches_tracked")
        assert torch.equal(reinit.params[key], initial[key] if swapped else trained[key]), key
    drawn = fresh.params
    assert torch.equal(drawn["layer3.0.bn1.running_mean"], torch.zeros(8))
    assert torch.equal(drawn["layer3.0.downsample.1.running_var"], torch.ones(8))
    counter = "layer3.0.bn1.num_batches_tracked"
    assert torch.equal(drawn[counter], trained[counter])
    assert not torch.equal(drawn["layer3.0.conv2.weight"], trained["layer3.0.conv2.weight"])
    assert torch.equal(drawn["layer3.1.conv1.weight"], trained["layer3.1.conv1.weight"])
    stage = [k for k in initial if k.startswith("layer2.") and not k.endswith("num_batches_tracked")]
    assert all(torch.equal(transplant.params[k], trained[k]) for k in stage)
    assert torch.equal(transplant.params["layer3.0.conv1.weight"], initial["layer3.0.conv1.weight"])


def test_the_config_key_round_trips_is_written_only_off_its_default_and_a_bad_level_is_one_line(
    tmp_path: Path,
) -> None:
    config = parse_config(tiny_raw_config(tmp_path / "s", groups=["stage", "block"]))
    assert config.plan.groups == ("layer", "block", "stage")  # single layers always, in level order
    assert parse_config(config.to_raw()) == config
    assert MeasurementPlan.from_dict(config.plan.to_dict()).groups == ("layer", "block", "stage")
    default = parse_config(tiny_raw_config(tmp_path / "s"))
    # a sweep record without groups is written, and named, as before groups existed
    assert "groups" not in default.to_raw() and "groups" not in default.plan.to_dict()
    with pytest.raises(ConfigError) as refused:
        parse_config(tiny_raw_config(tmp_path / "s", groups=["blocks"]))
    message = str(refused.value)
    assert "groups" in message and "'blocks'" in message and "\n" not in message


def test_analyze_refuses_an_unknown_level_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", str(tmp_path), "--groups", "layer,stages"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--groups" in err[0] and "'layer,stages'" in err[0] and "block" in err[0]


@pytest.fixture(scope="module")
def grouped(local_ray, tmp_path_factory) -> Path:
    """One tiny ResNet trained with its blocks measured (every kind, movement, criticality)."""
    root = tmp_path_factory.mktemp("groups") / "store"
    config = parse_config(tiny_raw_config(
        root, name="groups", dataset="synthetic-images", model="resnet20", widths=[[4, 4, 8]], seeds=1,
        epochs=2, checkpoints=[0, 2], batch_size=32, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
        swaps=["reinit", "rerandomize", "transplant", "interpolate"], alphas=[0, 0.5, 1], groups=["block"],
        criticality={"alphas": 2, "sigmas": 2, "sigma_max": 0.01, "noise_samples": 2, "subset": 64},
    ))
    outcome = run_sweep(config, log=lambda _: None)
    assert (outcome.completed, outcome.failed) == (1, 0)
    return root


def test_blocks_are_measured_by_every_kind_with_movement_and_criticality(grouped: Path) -> None:
    blocks = {f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)}
    swaps = table(grouped, "swaps", SWAPS_SCHEMA)
    by_layer: dict[str, set[str]] = {}
    for row in swaps:
        by_layer.setdefault(row["layer"], set()).add(row["kind"])
    assert blocks <= set(by_layer) and not {"layer1", "layer2", "layer3"} & set(by_layer)
    assert all(by_layer[b] == {"reinit", "rerandomize", "transplant", "interpolate"} for b in blocks)
    movement = [row for row in table(grouped, "layers", LAYERS_SCHEMA) if row["layer"] in blocks]
    assert len(movement) == 2 * len(blocks)  # every checkpoint
    assert all(row["module_type"] == "block" and row["layer_index"] is None for row in movement)
    critical = {row["layer"] for row in table(grouped, "criticality", CRITICALITY_SCHEMA)}
    assert blocks <= critical and len(critical) == 22 + len(blocks)
    # reinit of a block recomputed with plain modules, and rebuilt by the API
    trial = table(grouped, "trials", TRIALS_SCHEMA)[0]
    spec = TrialSpec.from_dict(json.loads(trial["spec_json"]))
    store = Store.open(str(grouped))
    weights = {epoch: safetensors.torch.load(store.read_bytes(layout.weights_path(spec.trial_id, epoch)))
               for epoch in (0, 2)}
    network = registry.spec_network(spec, (3, 8, 8), 4)
    state = {k: weights[0][k] if k.startswith("layer2.0.") and "num_batches" not in k else v
             for k, v in weights[2].items()}
    network.load_state_dict(state)
    data = load_dataset("synthetic-images").tensors("cpu")
    with torch.no_grad():
        expected = (network.eval()(data.x_test).argmax(1) == data.y_test).float().mean().item()
    row = next(r for r in swaps if (r["kind"], r["layer"], r["epoch"]) == ("reinit", "layer2.0", 0))
    assert row["test_acc"] == pytest.approx(expected, abs=1.5 / len(data.y_test))
    moved = next(r for r in movement if r["epoch"] == 2 and r["layer"] == "layer2.0")
    trainable = [k for k in weights[0] if k.startswith("layer2.0.") and k.endswith((".weight", ".bias"))]
    assert len(trainable) == 9  # two convs and a shortcut conv, three BatchNorms' weight and bias
    moved_by = torch.cat([(weights[2][k] - weights[0][k]).double().reshape(-1) for k in trainable])
    assert moved["dist_init"] == pytest.approx(float(moved_by.norm()))
    variant = open_store(grouped).variant(spec.trial_id, "reinit", "layer2.0", epoch=0)
    assert evaluate(variant, dict(variant.state_dict()), data.x_test, data.y_test).test_acc == row["test_acc"]


def test_stages_asked_for_later_add_rows_and_rewrite_none(grouped: Path, tmp_path: Path) -> None:
    files = {path: path.stat().st_mtime_ns for path in (grouped / "index").rglob("*.parquet")}
    outcome = analyze_store(Store.open(str(grouped)), groups=("stage",), log=lambda _: None)
    assert (outcome.networks, outcome.failed) == (1, 0)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in files.items())  # nothing rewritten
    stages = {"layer1", "layer2", "layer3"}
    swaps = table(grouped, "swaps", SWAPS_SCHEMA)
    assert {row["layer"] for row in swaps} >= stages
    assert {row["kind"] for row in swaps if row["layer"] == "layer3"} == {
        "reinit", "rerandomize", "transplant", "interpolate"}
    movement = [row for row in table(grouped, "layers", LAYERS_SCHEMA) if row["layer"] in stages]
    assert len(movement) == 2 * len(stages) and {row["module_type"] for row in movement} == {"stage"}
    layer_files = sorted(p.name for p in (grouped / "index" / "layers").glob("*.parquet"))
    assert len(layer_files) == 2  # the network's own, and one batch of the stages' movement
    assert analyze_store(Store.open(str(grouped)), groups=("stage",), log=lambda _: None).rows == 0
    assert verify_store(Store.open(str(grouped))).problems == []
    write_report(Store.open(str(grouped)), out_dir=str(tmp_path / "report"))
    with open(tmp_path / "report" / "stats.csv", newline="") as stats:
        rows = list(csv.DictReader(stats))
    reinit = [row["layer"] for row in rows if row["kind"] == "reinit" and row["epoch"] == "0"]
    assert len(reinit) == 22 + 9 + 3 and len(set(reinit)) == len(reinit)
    assert reinit[:22] == [u.name for u in measured_units(
        registry.family("resnet20"), built("resnet20", (4, 4, 8)), ("layer",))]  # layers by depth first
    group_rows = [row for row in rows if row["layer"] in stages]
    assert group_rows and all(row["layer_index"] == "" and row["depth"] == "" for row in group_rows)
    # network criticality sums the single layers, not the groups as well
    layer_names = set(reinit[:22])
    scores = [row["criticality"] for row in table(grouped, "criticality", CRITICALITY_SCHEMA)
              if row["layer"] in layer_names]
    with open(tmp_path / "report" / "layer_stats.csv", newline="") as layer_stats:
        [network] = [row for row in csv.DictReader(layer_stats) if row["quantity"] == "network_criticality"]
    assert len(scores) == 22 and float(network["mean"]) == pytest.approx(sum(scores), rel=1e-9)
