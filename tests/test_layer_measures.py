"""Weight movement, interpolation and module criticality, on real stores and a hand-built network.

Movement rows are checked against distances recomputed here from the
safetensors files; interpolate's ends against reinit@0 and the trained
network; criticality against a network whose answer is known by construction;
``analyze --criticality`` against the files it writes.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import scipy.stats
import torch
from safetensors.numpy import load_file

from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.measure.criticality import SUBSET_BATCH, layer_criticalities, sigma_grid
from trainables.models.mlp import FAMILY, MLP
from trainables.models.mlp_fast import MLPNoiseLoss
from trainables.plan import CriticalitySettings, MeasurementPlan, plan_keys, row_key
from trainables.store.schemas import CRITICALITY_SCHEMA, LAYERS_SCHEMA, SWAPS_SCHEMA


def read(root: Path, table: str, schema) -> list[dict]:
    return ds.dataset(root / "index" / table, schema=schema, format="parquet").to_table().to_pylist()


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not str(p.relative_to(root)).startswith(("tune", "report"))
    }


@pytest.fixture(scope="module")
def trained_store(local_ray, tmp_path_factory) -> Path:
    """Two seeds of a 20-12-6-4 MLP with reinit and interpolate measured, no criticality."""
    root = tmp_path_factory.mktemp("measures") / "store"
    raw = tiny_raw_config(
        root,
        widths=[[12, 6]],
        seeds=2,
        epochs=2,
        checkpoints=[0, 1, 2],
        swaps=["reinit", "interpolate"],
        alphas=[0, 0.5, 1],
    )
    outcome = run_sweep(parse_config(raw), log=lambda _: None)
    assert (outcome.completed, outcome.failed) == (2, 0)
    return root


def test_movement_rows_equal_distances_recomputed_from_the_safetensors_files(trained_store: Path) -> None:
    rows = read(trained_store, "layers", LAYERS_SCHEMA)
    assert len(rows) == 2 * 3 * 3  # networks x checkpoints x layers
    for row in rows:
        weights = trained_store / "trials" / row["trial_id"] / "weights"

        def theta(epoch: int, layer: str = row["layer"], weights: Path = weights) -> np.ndarray:
            stored = load_file(str(weights / f"epoch={epoch:04d}.safetensors"))
            parts = [stored[f"{layer}.weight"].ravel(), stored[f"{layer}.bias"].ravel()]
            return np.concatenate(parts).astype(np.float64)

        now, start, end = theta(row["epoch"]), theta(0), theta(2)
        assert row["n_params"] == now.size
        assert row["norm"] == pytest.approx(np.linalg.norm(now), rel=1e-12)
        assert row["dist_init"] == pytest.approx(np.linalg.norm(now - start), rel=1e-12, abs=1e-15)
        assert row["rel_dist_init"] == pytest.approx(
            np.linalg.norm(now - start) / np.linalg.norm(start), rel=1e-12, abs=1e-15
        )
        cos = now @ start / (np.linalg.norm(now) * np.linalg.norm(start))
        assert row["cos_init"] == pytest.approx(cos, rel=1e-12)
        assert row["dist_final"] == pytest.approx(np.linalg.norm(now - end), rel=1e-12, abs=1e-15)
    moved = [row["rel_dist_init"] for row in rows if row["epoch"] == 2]
    assert all(value > 0 for value in moved)  # training moved every layer


def test_interpolate_ends_are_reinit_at_0_and_the_trained_network(trained_store: Path) -> None:
    rows = read(trained_store, "swaps", SWAPS_SCHEMA)
    by_key = {(row["trial_id"], *row_key(row)): row for row in rows}
    trial_ids = {row["trial_id"] for row in rows}
    for trial_id in trial_ids:
        trained = by_key[(trial_id, "none", None, 2, None, None, 0)]
        for layer in ("fc1", "fc2", "fc3"):
            start = by_key[(trial_id, "interpolate", layer, 0, 0.0, None, 0)]
            end = by_key[(trial_id, "interpolate", layer, 0, 1.0, None, 0)]
            reinit = by_key[(trial_id, "reinit", layer, 0, None, None, 0)]
            assert start["test_acc"] == reinit["test_acc"]
            assert start["test_loss"] == pytest.approx(reinit["test_loss"], rel=1e-9)
            assert end["test_acc"] == trained["test_acc"]
            assert end["test_loss"] == pytest.approx(trained["test_loss"], rel=1e-9)
            assert (trial_id, "interpolate", layer, 0, 0.5, None, 0) in by_key


def test_alpha_keys_do_not_depend_on_float_noise() -> None:
    plan = MeasurementPlan(("interpolate",), alphas=(0.1 * 3,))
    [_, key] = plan_keys(plan, ("fc1",), (0, 2))[1:]
    row = {"kind": "interpolate", "layer": "fc1", "epoch": 0, "alpha": 0.3, "draw": None}
    assert key == row_key(row) == ("interpolate", "fc1", 0, 0.3, None, 0)  # a row before v3: recalibrate 0


def test_analyze_criticality_writes_only_criticality_rows_then_nothing(trained_store: Path, capsys) -> None:
    before = file_states(trained_store)
    assert main(["analyze", str(trained_store), "--criticality"]) == 0
    assert "2 networks measured (6 new rows)" in capsys.readouterr().out
    after = file_states(trained_store)
    assert {path: after[path] for path in before} == before
    added = sorted(set(after) - set(before))
    assert len(added) == 2 and all(path.startswith("index/criticality/") for path in added)
    rows = read(trained_store, "criticality", CRITICALITY_SCHEMA)
    assert len(rows) == 6
    defaults = CriticalitySettings()
    for row in rows:
        assert (row["n_alpha"], row["n_sigma"], row["noise_samples"], row["rtol"]) == (11, 11, 10, 1.01)
        assert row["subset_size"] == 1024  # the synthetic training set is smaller than the default subset
        assert row["loss_at_star"] <= defaults.rtol * row["trained_loss"]
        assert row["criticality"] == pytest.approx(
            (row["alpha_star"] / row["sigma_star"]) ** 2 * row["sq_dist"], rel=1e-12
        )
    assert main(["analyze", str(trained_store), "--criticality"]) == 0
    assert "0 networks measured (0 new rows)" in capsys.readouterr().out
    assert file_states(trained_store) == after


def hand_built() -> tuple[MLP, dict, dict, torch.Tensor, torch.Tensor]:
    """fc1 = identity that never moved (its init already solves its part); fc2 starts at zero and
    ends as 5/3 * identity, a margin of 5 on inputs of norm 3: any shrink or noise raises the loss."""
    model = MLP(2, (2,), 2)
    eye = torch.eye(2)
    initial = {
        "fc1.weight": eye,
        "fc1.bias": torch.zeros(2),
        "fc2.weight": torch.zeros(2, 2),
        "fc2.bias": torch.zeros(2),
    }
    trained = {**initial, "fc2.weight": 5 / 3 * eye}
    x = torch.tensor([[3.0, 0.0], [0.0, 3.0]]).repeat(50, 1)
    y = torch.tensor([0, 1]).repeat(50)
    return model, initial, trained, x, y


def test_criticality_of_a_network_whose_answer_is_known() -> None:
    model, initial, trained, x, y = hand_built()
    settings = CriticalitySettings()
    loss, results = layer_criticalities(FAMILY, model, initial, trained, x, y, seed=0, settings=settings)
    assert loss == pytest.approx(math.log1p(math.exp(-5)), rel=1e-5)
    fc1, fc2 = results
    assert (fc1.criticality, fc1.alpha_star, fc1.sigma_star, fc1.pairs_evaluated) == (0.0, 0.0, 1e-16, 1)
    smallest = sigma_grid(settings)[0]
    assert (fc2.alpha_star, fc2.sigma_star) == (1.0, smallest)
    assert fc2.sq_dist == pytest.approx(2 * (5 / 3) ** 2)
    assert fc2.criticality == pytest.approx(fc2.sq_dist / smallest**2)
    assert fc2.pairs_evaluated == settings.alphas * settings.sigmas  # the very last pair by score


def test_stacked_noise_samples_equal_one_at_a_time() -> None:
    model, _, trained, x, y = hand_built()
    network = MLPNoiseLoss(model, trained, x, y, SUBSET_BATCH)
    h_in = network.inputs_of(1)
    generator = torch.Generator().manual_seed(3)
    weight = trained["fc2.weight"] + 0.3 * torch.randn((4, 2, 2), generator=generator)
    bias = 0.3 * torch.randn((4, 2), generator=generator)
    stacked = network.mean_loss(1, h_in, weight, bias)
    singles = [network.mean_loss(1, h_in, weight[k : k + 1], bias[k : k + 1]) for k in range(4)]
    assert stacked == pytest.approx(sum(singles) / 4, rel=1e-6)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("alphas", [0, 1.5], "alphas: 1.5 is not allowed"),
        ("alphas", "half", "alphas: 'half' is not allowed"),
        ("criticality", {"sigmas": 1}, "criticality.sigmas: 1 is not allowed"),
        ("criticality", {"rtol": 0.9}, "criticality.rtol: 0.9 is not allowed"),
        ("criticality", {"noise": 3}, "criticality.noise: 3 is not allowed"),
    ],
)
def test_bad_measurement_settings_are_one_line(tmp_path: Path, field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(tiny_raw_config(tmp_path, **{field: value}))


def test_config_round_trip_keeps_alphas_and_criticality(tmp_path: Path) -> None:
    config = parse_config(tiny_raw_config(tmp_path, alphas=[1, 0.5, 0.1 * 3], criticality={"alphas": 3}))
    assert config.alphas == (0.3, 0.5, 1.0)
    assert config.criticality == CriticalitySettings(alphas=3)
    assert parse_config(config.to_raw()) == config
    assert MeasurementPlan.from_dict(config.to_raw()) == config.plan


def test_report_aggregates_movement_and_criticality_from_the_index_tables(
    trained_store: Path, tmp_path
) -> None:
    if not (trained_store / "index" / "criticality").exists():
        assert main(["analyze", str(trained_store), "--criticality"]) == 0
    out = tmp_path / "report"
    assert main(["report", str(trained_store), "--out", str(out)]) == 0
    stats = pd.read_parquet(out / "layer_stats.parquet")
    movement = pd.DataFrame(read(trained_store, "layers", LAYERS_SCHEMA))
    last = movement[(movement["epoch"] == 2) & (movement["layer"] == "fc1")]["rel_dist_init"]
    row = stats[(stats["quantity"] == "rel_dist_init") & (stats["layer"] == "fc1") & (stats["epoch"] == 2)]
    assert len(row) == 1 and int(row["n"].iloc[0]) == 2
    assert row["mean"].iloc[0] == pytest.approx(last.mean())
    half = scipy.stats.t.ppf(0.975, 1) * last.std(ddof=1) / math.sqrt(2)
    assert row["ci95_high"].iloc[0] == pytest.approx(last.mean() + half)
    critical = pd.DataFrame(read(trained_store, "criticality", CRITICALITY_SCHEMA))
    network = stats[stats["quantity"] == "network_criticality"]
    assert network["mean"].iloc[0] == pytest.approx(critical.groupby("trial_id")["criticality"].sum().mean())
    text = (out / "report.md").read_text()
    assert re.search(r"fc1: \w+.* — moved \d+% from init, criticality [0-9.]+e-?\d+", text)
    for figure in ("movement-", "interpolate-", "criticality-"):
        assert figure in text
