"""W&B as W&B users work: settings from the config and W&B's environment, offline runs where
`wandb sync` finds them (read back with W&B's own record format), failures never fail trials."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config.blocks import WandbConfig
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from orchestrator.run.sweep import run_sweep
from orchestrator.wandb.report import attach_report
from orchestrator.wandb.settings import resolve_wandb
from tests.helpers import tiny_raw_config
from tests.wandb_records import WANDB_VARIABLES, offline_runs, wandb_sync_dry_run
from trainables.store import Store
from trainables.worker.wandb_log import WandbSpec


def clean_environment(patch: pytest.MonkeyPatch, home: Path) -> None:
    """No W&B variable and no ~/.netrc: only what a test sets counts."""
    for name in WANDB_VARIABLES:
        patch.delenv(name, raising=False)
    patch.setenv("HOME", str(home))


def test_the_block_and_wandb_win_the_environment_fills_the_rest(tmp_path):
    environ = {"WANDB_MODE": "offline", "WANDB_PROJECT": "env-project", "WANDB_ENTITY": "lab",
               "WANDB_DIR": str(tmp_path / "runs"), "WANDB_TAGS": "a,b"}
    resolved = resolve_wandb(WandbConfig(project="mine"), environ)
    assert resolved == WandbSpec(mode="offline", dir=str(tmp_path / "runs"), project="mine", entity="lab",
                                 tags=("a", "b"))
    block = WandbConfig(mode="online", dir="rel", tags=("x",))
    resolved = resolve_wandb(block, {**environ, "WANDB_API_KEY": "k" * 40}, cwd=str(tmp_path))
    assert (resolved.mode, resolved.project, resolved.tags, resolved.api_key) == (
        "online", "env-project", ("x",), "k" * 40)
    assert resolved.dir == os.path.abspath("rel")  # the block's dir, made absolute on the driver
    assert "k" * 40 not in repr(resolved)
    # without WANDB_DIR: ./wandb beside where the sweep was started
    assert resolve_wandb(WandbConfig(), {"WANDB_MODE": "dryrun"}, cwd=str(tmp_path)).dir == str(tmp_path)
    assert resolve_wandb(WandbConfig(), {"WANDB_MODE": "disabled"}) is None
    assert resolve_wandb(None, environ) is None
    with pytest.raises(ConfigError, match="WANDB_MODE: 'sometimes' is not allowed"):
        resolve_wandb(WandbConfig(), {"WANDB_MODE": "sometimes"})


def test_wandb_project_on_the_command_line_forces_no_mode(tmp_path):
    config = parse_config(tiny_raw_config(tmp_path / "store")).with_overrides(wandb_project="p")
    assert config.wandb == WandbConfig(project="p")
    raw = tiny_raw_config(tmp_path / "store", wandb={"mode": "offline", "tags": ["t"]})
    config = parse_config(raw).with_overrides(wandb_project="p")
    assert config.wandb == WandbConfig(project="p", mode="offline", tags=("t",))
    with pytest.raises(ConfigError, match="wandb.mode: 'sometimes' is not allowed"):
        parse_config(tiny_raw_config(tmp_path / "store", wandb={"mode": "sometimes"}))


def test_online_without_an_api_key_fails_before_ray_starts(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store", seeds=1)))
    environ = {key: value for key, value in os.environ.items() if key not in WANDB_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--wandb", "p"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("layerswap: error: wandb: online mode needs a W&B API key")
    assert "wandb login" in line and "WANDB_API_KEY" in line and "WANDB_MODE=offline" in line
    assert result.stdout == ""  # nothing ran: not even the sweep's first line
    assert not (tmp_path / "store").exists() and not (tmp_path / "wandb").exists()


@pytest.fixture(scope="module")
def offline_sweep(local_ray, tmp_path_factory):
    """`WANDB_MODE=offline layerswap sweep CONFIG --wandb PROJECT` started in a fresh folder."""
    root = tmp_path_factory.mktemp("wandb")
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(
        tiny_raw_config(root / "store", widths=[[12]], seeds=2, name="wandb-sweep")))
    with pytest.MonkeyPatch.context() as patch:
        clean_environment(patch, root)
        patch.setenv("WANDB_MODE", "offline")
        patch.chdir(root)
        output = cli_in_this_process(["sweep", str(config_path), "--wandb", "layerswap-test"])
    config = parse_config(yaml.safe_load(config_path.read_text()))
    return config, Store.open(str(root / "store")), root, output


def cli_in_this_process(argv: list[str]) -> tuple[int, str]:
    """The CLI in this process (it joins the test's Ray), with what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, printed.getvalue()


def test_one_offline_run_per_network_and_the_report_run_in_dot_wandb(offline_sweep):
    config, _, root, (code, printed) = offline_sweep
    assert code == 0, printed
    runs = offline_runs(root / "wandb")
    specs = expand_grid(config)
    expected = [spec.trial_id for spec in specs] + ["wandb-sweep-report"]
    assert sorted(run.name for run in runs) == sorted(expected)
    assert {run.group for run in runs} == {"wandb-sweep"}
    assert {run.project for run in runs} == {"layerswap-test"}
    for spec in specs:
        [run] = [run for run in runs if run.name == spec.trial_id]
        assert run.job_type == "train"
        assert run.config["data_mean"] == spec.data_mean and run.config["widths"] == list(spec.widths)
        epochs = [row for row in run.history if "train_loss" in row]
        assert [row["epoch"] for row in epochs] == list(range(1, spec.epochs + 1))
        assert all(0 <= row["test_acc"] <= 1 and row["train_loss"] > 0 for row in epochs)
    assert f"wandb sync {root / 'wandb'}" in printed
    assert "Would sync 3 run(s)" in wandb_sync_dry_run(str(root / "wandb"))


def test_the_swap_table_and_summary_match_the_store(offline_sweep):
    config, store, root, _ = offline_sweep
    swaps = store.read_index("swaps").to_pylist()
    trials = {row["trial_id"]: row for row in store.read_index("trials").to_pylist()}
    runs = {run.name: run for run in offline_runs(root / "wandb")}
    for spec in expand_grid(config):
        run = runs[spec.trial_id]
        [table_file] = (run.folder / "files" / "media" / "table").glob("swaps*.json")
        table = json.loads(table_file.read_text())
        assert table["columns"] == ["kind", "layer", "epoch", "alpha", "draw", "test_acc", "test_loss"]
        mine = [row for row in swaps if row["trial_id"] == spec.trial_id]
        assert sorted((r[0], r[1] or "", r[2], r[4] or 0, r[5]) for r in table["data"]) == sorted(
            (r["kind"], r["layer"] or "", r["epoch"], r["draw"] or 0, r["test_acc"]) for r in mine)
        trained = trials[spec.trial_id]["test_acc"]
        assert run.summary["test_acc"] == trained
        assert run.summary["init_test_acc"] == trials[spec.trial_id]["init_test_acc"]
        reinit0 = {r["layer"]: r["test_acc"] for r in mine if r["kind"] == "reinit" and r["epoch"] == 0}
        assert reinit0.keys() == {"fc1", "fc2"}
        for layer, acc in reinit0.items():
            assert run.summary[f"reinit@0_drop/{layer}"] == pytest.approx(trained - acc)


def test_the_report_run_carries_stats_and_html(offline_sweep):
    _, _, root, _ = offline_sweep
    [report] = [run for run in offline_runs(root / "wandb") if run.name == "wandb-sweep-report"]
    assert report.job_type == "report"
    files = report.artifacts["wandb-sweep-report"]
    assert {"stats.parquet", "report.html"} <= set(files)


def test_a_failing_wandb_does_not_fail_the_trials(local_ray, tmp_path, monkeypatch):
    # online, a key, and no server listening: wandb.init fails in every trial (after its 1 s timeout)
    clean_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    raw = tiny_raw_config(tmp_path / "store", widths=[[12]], seeds=1, epochs=1, checkpoints=[0, 1],
                          wandb={"project": "p", "dir": str(tmp_path), "init_timeout_seconds": 1})
    outcome = run_sweep(parse_config(raw), log=lambda line: None)
    assert (outcome.completed, outcome.failed) == (1, 0)
    assert Store.open(str(tmp_path / "store")).read_index("trials").num_rows == 1
    assert not list((tmp_path / "wandb").glob("offline-run-*"))
    broken = resolve_wandb(WandbConfig(project="p", dir=str(tmp_path), init_timeout_seconds=1))
    report = tmp_path / "report.md"
    report.write_text("# layerswap report\n")
    assert not attach_report(broken, "demo", pafs.LocalFileSystem(), [str(report)])
