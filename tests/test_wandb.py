"""W&B logging in offline mode: one run per network, grouped by sweep; failures never fail trials."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from orchestrator.config import parse_config
from orchestrator.grid import expand_grid
from orchestrator.launch import run_sweep
from orchestrator.wandb_report import attach_report
from tests.conftest import tiny_raw_config
from trainables.store import Store
from trainables.wandb_spec import WandbSpec


def offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted((wandb_dir / "wandb").glob("offline-run-*"))


def run_of_trial(runs: list[Path], trial_id: str) -> Path:
    """The run whose record log names this trial (W&B's .wandb files are binary records)."""
    [match] = [run for run in runs if trial_id.encode() in next(run.glob("*.wandb")).read_bytes()]
    return match


@pytest.fixture(scope="module")
def offline_sweep(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb")
    wandb_dir = root / "wandb-runs"
    wandb_dir.mkdir()
    raw = tiny_raw_config(root / "store", widths=[[12]], seeds=2, name="wandb-sweep",
                          wandb={"project": "layerswap-test", "mode": "offline", "dir": str(wandb_dir)})
    config = parse_config(raw)
    outcome = run_sweep(config, log=lambda line: None)
    return config, Store.open(str(root / "store")), wandb_dir, outcome


def test_one_offline_run_per_network_with_its_spec_and_epochs(offline_sweep):
    config, _, wandb_dir, outcome = offline_sweep
    assert outcome.completed == 2
    runs = offline_runs(wandb_dir)
    assert len(runs) == 2
    for spec in expand_grid(config):
        records = next(run_of_trial(runs, spec.trial_id).glob("*.wandb")).read_bytes()
        assert b"wandb-sweep" in records  # the group
        assert b"layerswap-test" in records  # the project
        for key in (b"train_loss", b"test_acc", b"epoch", b"data_mean"):
            assert key in records, key


def test_the_swap_table_in_the_run_matches_the_store(offline_sweep):
    config, store, wandb_dir, _ = offline_sweep
    swaps = store.read_index("swaps").to_pylist()
    runs = offline_runs(wandb_dir)
    for spec in expand_grid(config):
        [table_file] = (run_of_trial(runs, spec.trial_id) / "files" / "media" / "table").glob("swaps*.json")
        table = json.loads(table_file.read_text())
        assert table["columns"] == ["kind", "layer", "epoch", "draw", "test_acc", "test_loss"]
        stored = sorted(
            (r["kind"], r["layer"] or "", r["test_acc"]) for r in swaps if r["trial_id"] == spec.trial_id
        )
        logged = sorted((row[0], row[1] or "", row[4]) for row in table["data"])
        assert logged == stored


def test_a_failing_wandb_does_not_fail_the_trials(local_ray, tmp_path, monkeypatch):
    # online mode without an API key (and no network): wandb.init raises in every trial
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    raw = tiny_raw_config(tmp_path / "store", widths=[[12]], seeds=1,
                          wandb={"project": "p", "mode": "online", "dir": str(tmp_path),
                                 "init_timeout_seconds": 5})
    outcome = run_sweep(parse_config(raw), log=lambda line: None)
    assert (outcome.completed, outcome.failed) == (1, 0)
    assert Store.open(str(tmp_path / "store")).read_index("trials").num_rows == 1
    assert offline_runs(tmp_path) == []  # W&B really failed: no run was written


def test_the_report_is_attached_to_a_sweep_level_run(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# layerswap report\n")
    (report / "stats.csv").write_text("kind,mean_acc\nnone,0.9\n")
    settings = WandbSpec(project="layerswap-test", mode="offline", dir=str(tmp_path))
    paths = [str(report / "report.md"), str(report / "stats.csv")]
    assert attach_report(settings, "demo", pafs.LocalFileSystem(), paths)
    [run] = offline_runs(tmp_path)
    records = next(run.glob("*.wandb")).read_bytes()
    assert b"demo-report" in records and b"report.md" in records
    broken = WandbSpec(project="p", mode="online", dir=str(tmp_path), init_timeout_seconds=5)
    assert not attach_report(broken, "demo", pafs.LocalFileSystem(), paths)
