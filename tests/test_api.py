"""The Python API (``from orchestrator import open_store``) on a real grid sweep: tables, statistics,
networks and the exact swapped networks behind swaps rows, errors, read-only, S3, light import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import safetensors.torch
import torch

from orchestrator import open_store
from orchestrator.api import ArgumentError
from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep
from tests.helpers import s3_uri, tiny_raw_config
from trainables.errors import StoreError, UserError
from trainables.measure.evaluation import evaluate
from trainables.store import layout

KINDS = ("none", "reinit", "rerandomize", "transplant", "interpolate")


@pytest.fixture(scope="module")
def swept(local_ray, tmp_path_factory) -> Path:
    """A store of 2 learning rates x 1 width config x 2 seeds with every swap kind, movement and
    criticality, and its report."""
    root = tmp_path_factory.mktemp("api") / "store"
    raw = tiny_raw_config(
        root, widths=[[16, 8]], epochs=2, checkpoints=[0, 1, 2], optimizer={"name": "sgd"},
        grid={"optimizer.lr": [0.1, 0.05]}, swaps=["reinit", "rerandomize", "transplant", "interpolate"],
        rerandomize_draws=2, alphas=[0, 0.5, 1],
        criticality={"alphas": 2, "sigmas": 2, "noise_samples": 1, "subset": 100},
    )
    outcome = run_sweep(parse_config(raw), log=lambda _: None)
    assert (outcome.completed, outcome.failed) == (4, 0)
    assert main(["report", str(root)]) == 0
    return root


def test_trials_are_one_row_per_network_with_the_spec_fields_as_columns(swept):
    trials = open_store(swept).trials()
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert sorted(trials["optimizer.lr"]) == [0.05, 0.05, 0.1, 0.1]
    assert (trials["optimizer.lr"] == trials["lr"]).all() and (trials["optimizer.name"] == "sgd").all()
    assert {"optimizer.momentum", "optimizer.weight_decay", "precision", "data_mean"} <= set(trials.columns)
    assert set(trials["widths"]) == {(16, 8)} and set(trials["checkpoints"]) == {(0, 1, 2)}
    assert trials.groupby("config_id")["optimizer.lr"].nunique().eq(1).all()
    assert trials["config_id"].nunique() == 2
    assert open_store(swept).trials(sweep="tiny")["trial_id"].tolist() == trials["trial_id"].tolist()


def test_every_table_is_joined_with_its_trial_fields(swept):
    store = open_store(swept)
    swaps = store.swaps(sweep="tiny")
    raw = pd.read_parquet(swept / "index" / "swaps")
    assert len(swaps) == len(raw) == 4 * (3 + 3 * (2 + 2 + 1 + 3))  # none at 3 checkpoints; 3 layers
    assert set(swaps["kind"]) == set(KINDS) and str(swaps["epoch"].dtype) == "Int32"
    lrs = store.trials().set_index("trial_id")["optimizer.lr"]
    assert (swaps["optimizer.lr"] == swaps["trial_id"].map(lrs)).all()
    layers, criticality = store.layers(), store.criticality()
    assert len(layers) == 4 * 3 * 3 and {"rel_dist_init", "optimizer.lr", "seed"} <= set(layers.columns)
    assert len(criticality) == 4 * 3 and (criticality["config_id"].notna()).all()


def test_stats_equal_the_reports_stats_parquet_in_every_column(swept):
    stats = open_store(swept).stats()
    written = pd.read_parquet(swept / "report" / "stats.parquet")
    assert list(stats.columns) == list(written.columns) and len(stats) == len(written) > 0
    pd.testing.assert_frame_equal(stats, written)
    assert stats["config_id"].nunique() == 2


def test_a_network_holds_its_checkpoint_weights_in_eval_mode(swept):
    store = open_store(swept)
    row = store.trials().iloc[0]
    for epoch, expected in ((None, 2), (1, 1)):
        network = store.network(row["trial_id"], epoch)
        assert not network.training
        stored = safetensors.torch.load_file(swept / layout.weights_path(row["trial_id"], expected))
        assert network.state_dict().keys() == stored.keys()
        assert all(torch.equal(network.state_dict()[key], value) for key, value in stored.items())
    data = store.dataset("synthetic")
    trained = store.network(row["trial_id"])
    assert evaluate(trained, dict(trained.state_dict()), data.x_test, data.y_test).test_acc == row["test_acc"]


def test_a_variant_of_every_kind_gives_its_rows_test_acc_exactly(swept, one_thread):
    store = open_store(swept)
    swaps = store.swaps()
    trial_id = swaps["trial_id"].iloc[0]
    data = store.dataset("synthetic")
    rows = swaps[swaps["trial_id"] == trial_id]
    checked = set()
    for row in rows.itertuples():
        epoch = 0 if pd.isna(row.epoch) else int(row.epoch)
        layer = None if pd.isna(row.layer) else row.layer
        alpha = None if pd.isna(row.alpha) else row.alpha
        draw = None if pd.isna(row.draw) else int(row.draw)
        network = store.variant(trial_id, row.kind, layer, epoch=epoch, alpha=alpha, draw=draw)
        result = evaluate(network, dict(network.state_dict()), data.x_test, data.y_test)
        assert (result.test_acc, result.n_test) == (row.test_acc, row.n_test), row
        checked.add(row.kind)
    assert checked == set(KINDS) and len(rows) == 27
    reinit = store.variant(trial_id, "reinit", "fc1", epoch=0)
    initial, trained = store.network(trial_id, 0), store.network(trial_id)
    assert torch.equal(reinit.state_dict()["fc1.weight"], initial.state_dict()["fc1.weight"])
    assert torch.equal(reinit.state_dict()["fc2.weight"], trained.state_dict()["fc2.weight"])
    draws = [store.variant(trial_id, "rerandomize", "fc2", draw=d).state_dict()["fc2.weight"] for d in (0, 1)]
    assert not torch.equal(draws[0], draws[1])


def test_errors_are_the_clis_lines(swept, tmp_path, capsys):
    nothing = tmp_path / "nothing"
    with pytest.raises(StoreError) as refused:
        open_store(nothing)
    assert main(["ls", str(nothing)]) == 2
    assert capsys.readouterr().err == f"layerswap: error: {refused.value}\n"
    assert not nothing.exists()
    store = open_store(swept)
    with pytest.raises(StoreError) as unknown:
        store.trials(sweep="nope")
    assert main(["ls", str(swept), "--sweep", "nope"]) == 2
    assert capsys.readouterr().err == f"layerswap: error: {unknown.value}\n"
    trial_id = store.trials()["trial_id"].iloc[0]
    cases = [
        (lambda: store.network("0123456789abcdef"), StoreError, "holds no complete trial '0123456789abcdef'"),
        (lambda: store.network("../../etc"), StoreError, "is not a trial id"),
        (lambda: store.network(trial_id, epoch=5), ArgumentError, "epoch: 5 is not a checkpoint of"),
        (lambda: store.variant(trial_id, "shuffle", "fc1"), ArgumentError,
         "kind: 'shuffle' is not a swap kind"),
        (lambda: store.variant(trial_id, "reinit", "fc9"), ArgumentError, "'fc9' is not a layer or group of"),
        (lambda: store.variant(trial_id, "interpolate", "fc1"), ArgumentError, "needs an alpha in [0, 1]"),
        (lambda: store.variant(trial_id, "reinit", "fc1", recalibrate=100), StoreError,
         "has no BatchNorm, so no row of it is measured with recalibrate 100"),
        (lambda: store.dataset("imagenet"), UserError, "unknown dataset 'imagenet'"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind) as err:
            call()
        assert text in str(err.value) and "\n" not in str(err.value)


def fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its sha256 and modification time (ns)."""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def test_the_api_never_changes_a_byte_of_the_store(swept):
    before = fingerprint(swept)
    store = open_store(swept)
    trial_id = store.trials()["trial_id"].iloc[0]
    for table in (store.trials, store.swaps, store.layers, store.criticality, store.stats):
        assert len(table()) and len(table(sweep="tiny"))
    store.spec(trial_id)
    store.network(trial_id, 1)
    variants = [("none", None, 1, None, None), ("reinit", "fc1", 0, None, None),
                ("rerandomize", "fc2", 0, None, 1), ("transplant", "fc3", 2, None, None),
                ("interpolate", "fc1", 0, 0.5, None)]
    for kind, layer, epoch, alpha, draw in variants:
        store.variant(trial_id, kind, layer, epoch, alpha, draw)
    store.dataset("synthetic")
    assert fingerprint(swept) == before


def test_the_api_reads_a_store_on_s3(swept, s3_endpoint, one_thread):  # noqa: F811
    uri = s3_uri(s3_endpoint, "api")
    fs, root = pafs.FileSystem.from_uri(uri)
    pafs.copy_files(str(swept), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    local, remote = open_store(swept), open_store(uri)
    pd.testing.assert_frame_equal(remote.trials(), local.trials())
    pd.testing.assert_frame_equal(remote.swaps(), local.swaps())
    pd.testing.assert_frame_equal(remote.stats(), local.stats())
    row = remote.swaps().query("kind == 'rerandomize'").iloc[0]
    network = remote.variant(row["trial_id"], "rerandomize", row["layer"], draw=int(row["draw"]))
    data = remote.dataset("synthetic")
    assert evaluate(network, dict(network.state_dict()), data.x_test, data.y_test).test_acc == row["test_acc"]
    assert "s3://" in repr(remote)


def test_importing_the_api_loads_nothing_heavy():
    script = (
        "import sys\nimport orchestrator.api\nfrom orchestrator import open_store\n"
        "print(sorted(m for m in ('torch', 'pyarrow', 'pandas', 'ray', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
