"""A tiny sweep end to end on a real Ray; the store is read back and checked independently."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import safetensors.torch
import torch
import yaml
from torch import nn

from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.models.registry import build_network
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import SWAPS_SCHEMA, TRIALS_SCHEMA, WEIGHTS_SCHEMA
from trainables.train.network import EpochEnd
from trainables.worker.pack_job import Placement, run_network


def read_table(root: Path, name: str, schema):
    return ds.dataset(root / "index" / name, schema=schema, format="parquet").to_table()


def file_stamps(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_mtime_ns, path.stat().st_ino)
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.fixture(scope="module")
def finished_sweep(local_ray, tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep") / "store"
    config = parse_config(tiny_raw_config(store, rerandomize_draws=2, pack=2))
    outcome = run_sweep(config, log=lambda line: None)
    return config, store, outcome


def test_sweep_trains_every_trial_and_writes_the_canonical_tables(finished_sweep):
    config, store, outcome = finished_sweep
    assert (outcome.total, outcome.completed, outcome.failed, outcome.skipped) == (4, 4, 0, 0)
    trials = read_table(store, "trials", TRIALS_SCHEMA)
    assert trials.schema == TRIALS_SCHEMA
    assert sorted(trials["trial_id"].to_pylist()) == sorted(s.trial_id for s in expand_grid(config))
    assert set(trials["sweep"].to_pylist()) == {"tiny"}
    assert all(trials["node_id"].to_pylist()) and set(trials["device"].to_pylist()) == {"cpu"}
    # the synthetic task is learnable: trained beats the initial network and chance (1/4)
    for row in trials.to_pylist():
        assert row["test_acc"] > max(row["init_test_acc"], 0.25) + 0.1
    assert read_table(store, "weights", WEIGHTS_SCHEMA).schema == WEIGHTS_SCHEMA
    assert read_table(store, "swaps", SWAPS_SCHEMA).schema == SWAPS_SCHEMA


def test_trial_ids_are_the_sha256_of_spec_json(finished_sweep):
    _, store, _ = finished_sweep
    for row in read_table(store, "trials", TRIALS_SCHEMA).to_pylist():
        spec_bytes = (store / "trials" / row["trial_id"] / "spec.json").read_bytes()
        assert hashlib.sha256(spec_bytes).hexdigest()[:16] == row["trial_id"]
        assert row["spec_json"].encode("utf-8") == spec_bytes
        assert TrialSpec.from_dict(json.loads(spec_bytes)).canonical_json() == spec_bytes


def test_stored_tensors_match_their_index_rows(finished_sweep):
    _, store, _ = finished_sweep
    weights = read_table(store, "weights", WEIGHTS_SCHEMA).to_pylist()
    assert weights
    files: dict[str, dict[str, torch.Tensor]] = {}
    for row in weights:
        assert row["path"].endswith(f"epoch={row['epoch']:04d}.safetensors")
        tensors = files.setdefault(row["path"], safetensors.torch.load_file(store / row["path"]))
        tensor = tensors[row["tensor"]]
        assert hashlib.sha256(tensor.numpy().tobytes()).hexdigest() == row["sha256"]
        assert list(tensor.shape) == row["shape"] and tensor.nbytes == row["nbytes"]
        assert row["layer"] == row["tensor"].split(".")[0] and row["dtype"] == "float32"


def load_epoch(store: Path, trial_id: str, epoch: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(store / layout.weights_path(trial_id, epoch))


def rebuild_params(spec: TrialSpec, store: Path, row: dict) -> dict[str, torch.Tensor]:
    """The swapped network of a swaps row, rebuilt from the stored files alone."""
    trial_id, kind, layer = row["trial_id"], row["kind"], row["layer"]
    if kind == "none":
        return load_epoch(store, trial_id, row["epoch"])
    base = load_epoch(store, trial_id, 0 if kind == "transplant" else spec.epochs)
    if kind == "rerandomize":
        torch.manual_seed(derive_seed("rerandomize", spec.seed, layer, row["draw"]))
        weight = base[f"{layer}.weight"]
        fresh = nn.Linear(weight.shape[1], weight.shape[0])
        donor = {f"{layer}.weight": fresh.weight.detach(), f"{layer}.bias": fresh.bias.detach()}
    else:
        donor = load_epoch(store, trial_id, row["epoch"])
    return {**base, **{k: v for k, v in donor.items() if k.startswith(f"{layer}.")}}


def test_swap_accuracies_recomputed_from_stored_weights_match_the_table(finished_sweep):
    config, store, _ = finished_sweep
    data = load_dataset("synthetic").tensors("cpu")
    swaps = read_table(store, "swaps", SWAPS_SCHEMA).to_pylist()
    specs = {spec.trial_id: spec for spec in expand_grid(config)}
    for trial_id, spec in specs.items():
        rows = [r for r in swaps if r["trial_id"] == trial_id]
        n_layers = len(spec.widths) + 1
        kinds = [r["kind"] for r in rows]
        assert kinds.count("none") == 3 and kinds.count("reinit") == 2 * n_layers
        assert kinds.count("rerandomize") == 2 * n_layers and kinds.count("transplant") == n_layers
        model = build_network("mlp", (20,), spec.widths, 4)
        for row in rows:
            model.load_state_dict(rebuild_params(spec, store, row))
            with torch.no_grad():
                logits = model(data.x_test)
            accuracy = (logits.argmax(1) == data.y_test).double().mean().item()
            loss = nn.functional.cross_entropy(logits, data.y_test).item()
            assert row["test_acc"] == pytest.approx(accuracy, abs=1e-12), row
            assert row["test_loss"] == pytest.approx(loss, rel=1e-5), row
            assert row["n_test"] == data.y_test.shape[0]


def test_duckdb_reads_the_index(finished_sweep):
    _, store, _ = finished_sweep
    [(count, mean_acc)] = duckdb.sql(
        f"select count(*), avg(test_acc) from read_parquet('{store}/index/trials/*.parquet')"
    ).fetchall()
    assert count == 4 and 0.25 < mean_acc <= 1.0


def test_rerunning_the_sweep_trains_nothing_and_rewrites_no_file(finished_sweep):
    config, store, _ = finished_sweep
    before = file_stamps(store)
    outcome = run_sweep(config, log=lambda line: None)
    assert (outcome.skipped, outcome.completed) == (4, 0)
    assert file_stamps(store) == before


def test_a_trial_that_fails_half_way_leaves_no_result(tmp_path):
    config = parse_config(tiny_raw_config(tmp_path / "store"))
    spec = expand_grid(config)[0]
    store = Store.open(str(tmp_path / "store"))
    data = load_dataset("synthetic").tensors("cpu")
    placement = Placement.here(torch.device("cpu"))

    def crash_at_epoch_2(end: EpochEnd) -> None:
        if end.epoch == 2:
            raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        run_network(spec, config.plan, data, store, "tiny", placement, crash_at_epoch_2)
    assert store.completed_trial_ids() == set()
    for table in ("trials", "weights", "swaps"):
        assert store.read_index(table).num_rows == 0
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    row = run_network(spec, config.plan, data, store, "tiny", placement).trial_row
    assert store.completed_trial_ids() == {spec.trial_id} and row["test_acc"] > 0.25
    assert os.path.exists(tmp_path / "store" / "trials" / spec.trial_id / "spec.json")


def test_report_and_ls_read_the_sweep_store(finished_sweep, tmp_path, capsys):
    _, store, _ = finished_sweep
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    stats = pq.read_table(tmp_path / "report" / "stats.parquet").to_pylist()
    swaps = read_table(store, "swaps", SWAPS_SCHEMA).to_pylist()
    trials = {row["trial_id"]: row for row in read_table(store, "trials", TRIALS_SCHEMA).to_pylist()}
    for group in stats:
        if group["kind"] != "reinit":
            continue
        accs = [
            s["test_acc"] for s in swaps
            if s["kind"] == "reinit" and s["layer"] == group["layer"] and s["epoch"] == group["epoch"]
            and trials[s["trial_id"]]["widths"] == group["widths"]
        ]
        assert group["n"] == len(accs) == 2
        assert group["mean_acc"] == pytest.approx(sum(accs) / 2)
    assert {"report.md", "report.html", "stats.csv"} <= {p.name for p in (tmp_path / "report").iterdir()}
    assert main(["ls", str(store)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("tiny ") for line in listing) == 4 + 1  # 4 trials, 1 count line
    [counts] = [line.split() for line in listing if line.startswith("tiny ") and "-" not in line]
    assert counts == ["tiny", "4", "4", "0"]  # complete, expected, missing


def test_the_cli_on_a_finished_sweep_writes_its_report_once_then_nothing(finished_sweep, tmp_path, capsys):
    config, store, _ = finished_sweep
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config.to_raw()))
    assert main(["sweep", str(config_file)]) == 0  # nothing to train; no report yet: write it
    assert (store / "report" / "report.md").exists()
    before = file_stamps(store)
    assert main(["sweep", str(config_file)]) == 0
    assert file_stamps(store) == before
    assert "0 trained, 4 skipped" in capsys.readouterr().out
