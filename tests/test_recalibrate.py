"""``recalibrate: N``: every BatchNorm's statistics of each swapped network re-estimated from N fixed
training samples before it is evaluated, in rows keyed by ``recalibrate``; a network without
BatchNorm writes none; rows written before the column read as 0."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch

from orchestrator import open_store
from orchestrator.catalog.contents import load_contents
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
from trainables.measure.recalibrate import recalibrated, recalibration_samples
from trainables.models import registry
from trainables.models.architectures import BuildOptions
from trainables.plan import MeasurementPlan, plan_keys
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import SWAPS_SCHEMA, TRIALS_SCHEMA

N = 96
AT_TRAINING = 32


def rows(root: Path, name: str, schema) -> list[dict]:
    return ds.dataset(root / "index" / name, schema=schema, format="parquet").to_table().to_pylist()


def test_plan_keys_repeat_every_key_recalibrated_only_for_a_network_with_batchnorm() -> None:
    plan = MeasurementPlan(("reinit",), recalibrate=N)
    plain = plan_keys(MeasurementPlan(("reinit",)), ("conv1", "fc"), (0, 2), batchnorm=True)
    assert {key[5] for key in plain} == {0}
    with_bn = plan_keys(plan, ("conv1", "fc"), (0, 2), batchnorm=True)
    assert with_bn == plain + [(*key[:5], N) for key in plain]
    assert plan_keys(plan, ("conv1", "fc"), (0, 2), batchnorm=False) == plain


def test_recalibrated_statistics_are_the_cumulative_average_of_batch_statistics() -> None:
    torch.manual_seed(0)
    with torch.device("meta"):
        structure = registry.build_network("cnn", (3, 8, 8), (4, 6), 4, BuildOptions(norm="batch"))
    network = registry.build_network("cnn", (3, 8, 8), (4, 6), 4, BuildOptions(norm="batch"))
    variant = {key: value.clone() for key, value in network.state_dict().items()}
    variant["bn1.running_mean"] += 3.0
    variant["bn1.num_batches_tracked"] += 7
    before = {key: value.clone() for key, value in variant.items()}
    samples = torch.randn(80, 3, 8, 8)
    out = recalibrated(structure, variant, samples, batch=32)
    assert all(torch.equal(variant[key], before[key]) for key in variant)  # the variant is not written to
    # by hand: the first BatchNorm sees conv1's output; 80 samples at most 32 a batch are 3 batches
    # of 27, 27 and 26, each weighted equally
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(samples, variant["conv1.weight"], padding=1)
    batches = conv.split([27, 27, 26])
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.transpose(0, 1).reshape(b.shape[1], -1).var(dim=1) for b in batches])
    assert torch.allclose(out["bn1.running_mean"], means.mean(0), atol=1e-6)
    assert torch.allclose(out["bn1.running_var"], variances.mean(0), atol=1e-5)
    assert int(out["bn1.num_batches_tracked"]) == int(before["bn1.num_batches_tracked"])  # the base's
    assert not torch.allclose(out["bn2.running_var"], before["bn2.running_var"])
    assert all(torch.equal(out[key], variant[key]) for key in variant if "running" not in key)


def test_no_batch_of_one_sample_is_left_for_a_batchnorm_after_a_linear_layer() -> None:
    network = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    samples = torch.randn(65, 3)  # at most 64 a batch: 33 and 32, not 64 and 1
    out = recalibrated(network, network.state_dict(), samples, batch=64)
    with torch.no_grad():
        hidden = network[0](samples)
    expected = (hidden[:33].mean(0) + hidden[33:].mean(0)) / 2
    assert torch.allclose(out["1.running_mean"], expected, atol=1e-6)


@pytest.fixture(scope="module")
def stores(local_ray, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("recalibrate")
    configs = {
        "cnn": tiny_raw_config(root / "cnn", name="cnn", dataset="synthetic-images", model="cnn",
                               widths=[[4, 6]], seeds=1, epochs=2, checkpoints=[0, 2],
                               swaps=["reinit", "rerandomize"], recalibrate=AT_TRAINING),
        "mlp": tiny_raw_config(root / "mlp", name="mlp", widths=[[8]], seeds=1, epochs=2, checkpoints=[0, 2],
                               swaps=["reinit"]),
    }
    for raw in configs.values():
        outcome = run_sweep(parse_config(raw), log=lambda _: None)
        assert outcome.failed == 0
    return {name: root / name for name in configs}


def test_analyze_recalibrate_adds_every_key_again_and_each_row_is_the_recalibrated_network(stores) -> None:
    root = stores["cnn"]
    key = lambda row: (row["kind"], row["layer"], row["epoch"], row["alpha"], row["draw"])  # noqa: E731
    trained = rows(root, "swaps", SWAPS_SCHEMA)
    stored = sorted((key(row) for row in trained if row["recalibrate"] == 0), key=str)
    assert {row["recalibrate"] for row in trained} == {0, AT_TRAINING}  # measured when it was trained
    assert sorted((key(row) for row in trained if row["recalibrate"] == AT_TRAINING), key=str) == stored
    # the trial's accuracies are the network with its stored statistics, not the recalibrated one
    trial_row = rows(root, "trials", TRIALS_SCHEMA)[0]
    baseline = {(row["epoch"], row["recalibrate"]): row["test_acc"]
                for row in trained if row["kind"] == "none"}
    assert (trial_row["test_acc"], trial_row["init_test_acc"]) == (baseline[(2, 0)], baseline[(0, 0)])
    assert baseline[(2, 0)] != baseline[(2, AT_TRAINING)] or baseline[(0, 0)] != baseline[(0, AT_TRAINING)]
    outcome = analyze_store(Store.open(str(root)), recalibrate=N, log=lambda _: None)
    assert (outcome.networks, outcome.failed) == (1, 0)
    added = [row for row in rows(root, "swaps", SWAPS_SCHEMA) if row["recalibrate"] == N]
    assert sorted(map(key, added), key=str) == stored
    # reinit of conv1 to epoch 0, recalibrated, recomputed with plain modules
    trial = rows(root, "trials", TRIALS_SCHEMA)[0]
    spec = TrialSpec.from_dict(json.loads(trial["spec_json"]))
    store = Store.open(str(root))
    weights = {epoch: safetensors.torch.load(store.read_bytes(layout.weights_path(spec.trial_id, epoch)))
               for epoch in (0, 2)}
    network = registry.spec_network(spec, (3, 8, 8), 4)
    state = dict(weights[2])
    for name in ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"):
        state[name] = weights[0][name]
    network.load_state_dict(state)
    data = load_dataset("synthetic-images").tensors("cpu")
    order = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(
        derive_seed("recalibrate", spec.seed)))[:N]
    recal = copy.deepcopy(network)
    for module in recal.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    recal.train()
    with torch.no_grad():
        for chunk in data.x_train[order].split(N // 2):  # N = 96 at most 64 a batch: two of 48
            recal(chunk)
        logits = recal.eval()(data.x_test)
    expected = (logits.argmax(1) == data.y_test).float().mean().item()
    row = next(r for r in added if r["kind"] == "reinit" and r["layer"] == "conv1" and r["epoch"] == 0)
    assert row["test_acc"] == pytest.approx(expected, abs=1.5 / len(data.y_test))
    assert torch.equal(recalibration_samples(data.x_train, spec.seed, N), data.x_train[order])
    # the API rebuilds that recalibrated variant: evaluated, it gives the row's test_acc exactly
    variant = open_store(root).variant(spec.trial_id, "reinit", "conv1", epoch=0, recalibrate=N)
    assert evaluate(variant, dict(variant.state_dict()), data.x_test, data.y_test).test_acc == row["test_acc"]
    again = analyze_store(Store.open(str(root)), recalibrate=N, log=lambda _: None)
    assert again.rows == 0
    write_report(store)
    with open(root / "report" / "stats.csv", newline="") as stats:
        assert {row["recalibrate"] for row in csv.DictReader(stats)} == {"0", str(AT_TRAINING), str(N)}


def test_a_network_without_batchnorm_writes_no_recalibrated_rows(stores) -> None:
    root = stores["mlp"]
    before = rows(root, "swaps", SWAPS_SCHEMA)
    outcome = analyze_store(Store.open(str(root)), recalibrate=N, log=lambda _: None)
    assert outcome.rows == 0
    assert rows(root, "swaps", SWAPS_SCHEMA) == before


def test_the_config_key_round_trips_is_written_only_off_its_default_and_a_bad_value_is_one_line(
    tmp_path: Path,
) -> None:
    raw = tiny_raw_config(tmp_path / "store", recalibrate=N)
    config = parse_config(raw)
    assert config.plan.recalibrate == N and parse_config(config.to_raw()) == config
    assert MeasurementPlan.from_dict(config.to_raw()).recalibrate == N
    default = parse_config(tiny_raw_config(tmp_path / "store"))
    assert "recalibrate" not in default.to_raw() and default.plan.recalibrate == 0  # record names unchanged
    with pytest.raises(ConfigError) as refused:
        parse_config(tiny_raw_config(tmp_path / "store", recalibrate=-1))
    assert "recalibrate" in str(refused.value) and "\n" not in str(refused.value)


def test_rows_written_before_the_column_read_as_recalibrate_0(stores, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(stores["mlp"], old, ignore=shutil.ignore_patterns("report", "tune"))
    for path in (old / "index" / "swaps").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["recalibrate"]), path)
    swaps = load_contents(Store.open(str(old)), None).swaps
    assert swaps.num_rows > 0 and set(swaps.column("recalibrate").to_pylist()) == {0}
    write_report(Store.open(str(old)), out_dir=str(tmp_path / "report"))
    with open(tmp_path / "report" / "stats.csv", newline="") as stats:
        assert {row["recalibrate"] for row in csv.DictReader(stats)} == {"0"}
    assert verify_store(Store.open(str(old))).problems == []


def test_analyze_refuses_recalibrate_0(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path), "--recalibrate", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["layerswap: error: --recalibrate: 0 is not allowed; expected an integer >= 1"]
