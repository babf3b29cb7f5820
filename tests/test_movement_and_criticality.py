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
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import scipy.stats
import torch
from safetensors.numpy import load_file

from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.measure.criticality import SUBSET_BATCH, criticality_rows, layer_criticalities, sigma_grid
from trainables.models.mlp import FAMILY, MLP
from trainables.models.mlp_fast import MLPNoiseLoss
from trainables.plan import CriticalitySettings, MeasurementPlan, plan_keys, row_key
from trainables.store import Store
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
        assert (row["search"], row["n_alpha"], row["noise_samples"], row["rtol"]) == ("bisect", 11, 10, 1.01)
        assert (row["n_sigma"], row["sigma_max"]) == (None, None)  # the grid's settings only
        assert (row["precision"], row["rel_sigma_lo"], row["rel_sigma_hi"]) == (0.05, 1e-6, 1.0)
        assert row["sigma_lo"] == pytest.approx(1e-6 * row["sigma_hi"], rel=1e-12)
        assert row["sigma_lo"] <= row["sigma_star"] <= row["sigma_hi"]
        assert 0 < row["pairs_evaluated"] <= 119  # below the reference grid's 11 x 11
        assert row["censored"] == (row["sigma_star"] in (row["sigma_lo"], row["sigma_hi"]))
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
    settings = CriticalitySettings(search="grid")
    loss, results = layer_criticalities(FAMILY, model, initial, trained, x, y, seed=0, settings=settings)
    assert loss == pytest.approx(math.log1p(math.exp(-5)), rel=1e-5)
    fc1, fc2 = results
    assert (fc1.criticality, fc1.alpha_star, fc1.sigma_star, fc1.pairs_evaluated) == (0.0, 0.0, 1e-16, 1)
    smallest = sigma_grid(settings)[0]
    assert (fc2.alpha_star, fc2.sigma_star) == (1.0, smallest)
    assert fc2.sq_dist == pytest.approx(2 * (5 / 3) ** 2)
    assert fc2.criticality == pytest.approx(fc2.sq_dist / smallest**2)
    assert fc2.pairs_evaluated == settings.alphas * settings.sigmas  # the very last pair by score
    assert (fc2.sigma_lo, fc2.sigma_hi) == (smallest, 1.0)
    assert (fc1.censored, fc2.censored) == (False, True)  # fc2's boundary lies anywhere below 0.1


def test_the_bisection_resolves_what_the_grid_could_not_on_the_same_network() -> None:
    model, initial, trained, x, y = hand_built()
    settings = CriticalitySettings()
    loss, (fc1, fc2) = layer_criticalities(FAMILY, model, initial, trained, x, y, seed=0, settings=settings)
    assert (fc1.criticality, fc1.alpha_star, fc1.censored) == (0.0, 1.0, False)  # never moved
    rms = math.sqrt(2 * (5 / 3) ** 2 / 6)  # fc2's trained weight (5/3 on the diagonal) and zero bias
    assert (fc2.sigma_lo, fc2.sigma_hi) == pytest.approx((1e-6 * rms, rms), rel=1e-6)  # float32 5/3
    assert fc2.alpha_star == 1.0  # any shrink of the margin costs more than 1%
    assert fc2.sigma_lo < fc2.sigma_star < fc2.sigma_hi and not fc2.censored
    assert fc2.criticality == pytest.approx(fc2.sq_dist / fc2.sigma_star**2, rel=1e-12)
    assert fc2.loss_at_star <= settings.rtol * loss
    assert fc2.pairs_evaluated <= 119  # 11 alphas: at most 9 + 10 x 11


def test_a_layer_that_tolerates_noise_up_to_the_upper_bound_is_censored() -> None:
    model, initial, trained, x, y = hand_built()
    settings = CriticalitySettings(rel_sigma_hi=1e-3)  # noise of 1/1000 of fc2's weights leaves the loss
    _, (fc1, fc2) = layer_criticalities(FAMILY, model, initial, trained, x, y, seed=0, settings=settings)
    assert (fc2.alpha_star, fc2.sigma_star) == (1.0, fc2.sigma_hi) and fc2.censored
    assert fc2.criticality == pytest.approx(fc2.sq_dist / fc2.sigma_hi**2, rel=1e-12)  # an upper bound
    assert (fc1.criticality, fc1.censored) == (0.0, False)


def test_a_layer_where_no_alpha_passes_is_censored_with_no_score(tmp_path: Path) -> None:
    model, initial, trained, x, y = hand_built()
    settings = CriticalitySettings(rel_sigma_lo=0.5)  # noise of half the weights' size breaks every layer
    rows = criticality_rows("0123456789abcdef", 0, FAMILY, model, initial, trained, x, y, settings)
    store = Store.open(str(tmp_path))
    store.write_table("index/criticality/0123456789abcdef.parquet", "criticality", pa.Table.from_pylist(rows))
    for row in store.read_index("criticality").to_pylist():
        assert math.isnan(row["criticality"]) and math.isnan(row["sigma_star"]) and row["censored"] is True
        assert row["search"] == "bisect" and row["sigma_hi"] == pytest.approx(2 * row["sigma_lo"])
        # 16 sigmas from 0.5 to 1 x RMS: alpha 1 bisects down to sigma_lo (4 probes), the other 10 alphas
        # are warm-started there and fail at it (1 each)
        assert row["pairs_evaluated"] == 4 + 10


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
        ("criticality", {"search": "dense"}, "criticality.search: 'dense' is not allowed; allowed: bisect"),
        ("criticality", {"search": "bisect", "sigmas": 5}, "5 is not allowed; only search: grid uses"),
        ("criticality", {"sigma_max": 0.1, "precision": 0.1}, "0.1 is not allowed; only search: bisect"),
        ("criticality", {"precision": 0}, "criticality.precision: 0 is not allowed; expected a number > 0"),
        ("criticality", {"precision": 2}, "criticality.precision: 2.0 is not allowed; expected a number in"),
        ("criticality", {"rel_sigma_lo": 1.5}, "criticality.rel_sigma_lo: 1.5 is not allowed; expected a"),
    ],
)
def test_bad_measurement_settings_are_one_line(tmp_path: Path, field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(tiny_raw_config(tmp_path, **{field: value}))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("search: dense", "criticality.search: 'dense' is not allowed; allowed: bisect, grid"),
        ("{search: bisect, sigma_max: 0.01}", "sigma_max: 0.01 is not allowed; only search: grid uses it"),
        ("[1, 2]", "'[1, 2]' is not a mapping such as 'search: grid, sigmas: 11'"),
    ],
)
def test_bad_criticality_settings_on_the_command_line_are_one_line(tmp_path, capsys, settings, message):
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(tmp_path), "--criticality", settings])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_config_round_trip_keeps_alphas_and_criticality(tmp_path: Path) -> None:
    config = parse_config(tiny_raw_config(tmp_path, alphas=[1, 0.5, 0.1 * 3], criticality={"alphas": 3}))
    assert config.alphas == (0.3, 0.5, 1.0)
    assert config.criticality == CriticalitySettings(alphas=3)  # the bisection
    assert parse_config(config.to_raw()) == config
    assert MeasurementPlan.from_dict(config.to_raw()) == config.plan
    grid = parse_config(tiny_raw_config(tmp_path, criticality={"search": "grid", "sigma_max": 0.01}))
    assert grid.criticality == CriticalitySettings(search="grid", sigma_max=0.01)
    # recorded as grids always were (sweep records keep their names), and read back as the grid
    assert grid.to_raw()["criticality"] == {
        "alphas": 11, "sigmas": 11, "sigma_max": 0.01, "noise_samples": 10, "rtol": 1.01, "subset": 10000
    }
    assert parse_config(grid.to_raw()) == grid and MeasurementPlan.from_dict(grid.to_raw()) == grid.plan


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
    # a score at either end of the sigma range searched is an upper bound, shown as "≤"
    assert re.search(r"fc1: \w+.* — moved \d+% from init, criticality (≤ )?[0-9.]+e-?\d+", text)
    for figure in ("movement-", "interpolate-", "criticality-"):
        assert figure in text


GRID = "search: grid, sigmas: 6, sigma_max: 0.05, noise_samples: 2, subset: 256"
SEARCH_COLUMNS = ("search", "sigma_lo", "sigma_hi", "censored", "precision", "rel_sigma_lo", "rel_sigma_hi")


def test_grid_rows_of_before_and_bisect_rows_of_one_network_coexist_and_are_never_pooled(
    trained_store: Path, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "store"
    shutil.copytree(trained_store, root, ignore=shutil.ignore_patterns("criticality", "report"))
    assert main(["analyze", str(root), "--criticality", GRID]) == 0
    for path in (root / "index" / "criticality").glob("*.parquet"):  # as written before the search existed
        pq.write_table(pq.read_table(path).drop_columns(list(SEARCH_COLUMNS)), path)
    before = file_states(root)
    assert main(["analyze", str(root), "--criticality", GRID]) == 0  # the old rows count as measured
    assert "0 networks measured (0 new rows)" in capsys.readouterr().out
    assert main(["analyze", str(root), "--criticality"]) == 0  # the default: the bisection
    assert "2 networks measured (6 new rows)" in capsys.readouterr().out
    after = file_states(root)
    assert {path: after[path] for path in before} == before
    rows = pd.DataFrame(Store.open(str(root)).read_index("criticality").to_pylist())
    assert sorted(rows["search"]) == ["bisect"] * 6 + ["grid"] * 6
    grid = rows[rows["search"] == "grid"]
    assert (grid["sigma_lo"] == 1e-16 * 0.05).all() and (grid["sigma_hi"] == 0.05).all()
    at_bound = grid["sigma_star"].isin([1e-16 * 0.05, 0.05]) | grid["criticality"].isna()
    assert (grid["censored"] == at_bound & (grid["criticality"] != 0)).all()
    assert main(["verify", str(root)]) == 0
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    stats = pd.read_parquet(tmp_path / "report" / "layer_stats.parquet")
    critical = stats[stats["quantity"] == "criticality"]
    assert sorted(critical["settings"].unique()) == [
        "11x6 sigma_max=0.05 K=2 rtol=1.01 subset=256",
        "bisect 11 alphas precision=0.05 sigma=1e-06..1 RMS K=10 rtol=1.01 subset=1024",
    ]
    assert len(critical) == 2 * 3 and (critical["n"] == 2).all()  # per settings and layer, both seeds
    for label, search in zip(sorted(critical["settings"].unique()), ("grid", "bisect"), strict=True):
        fc1 = rows[(rows["search"] == search) & (rows["layer"] == "fc1")]["criticality"]
        mean = critical[(critical["settings"] == label) & (critical["layer"] == "fc1")]["mean"].iloc[0]
        assert mean == pytest.approx(fc1.mean(), rel=1e-12)
