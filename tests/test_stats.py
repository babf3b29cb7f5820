"""Per-layer statistics against an independent computation (numpy / scipy.stats.t)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as st

from orchestrator.report.stats import (
    STATS_COLUMNS,
    STATS_SCHEMA,
    compute_stats,
    layer_sort_key,
    stats_to_arrow,
    stats_to_csv,
)
from tests.helpers import Swap, spec_json_with, standard_swaps, swaps_table, trial_table, write_trial
from trainables.store import Store
from trainables.store.schemas import SWAPS_SCHEMA


def t_ci(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return st.t.interval(0.95, len(arr) - 1, loc=arr.mean(), scale=st.sem(arr))


def read_back(store: Store):
    return compute_stats(store.read_index("trials"), store.read_index("swaps"))


def pick(stats, kind: str, layer: str | None = None, epoch: int | None = None, widths=(8, 4)):
    mask = (stats["kind"] == kind) & stats["widths"].map(lambda w: tuple(w) == tuple(widths))
    mask &= stats["layer"].isna() if layer is None else stats["layer"] == layer
    mask &= stats["epoch"].isna() if epoch is None else stats["epoch"] == epoch
    found = stats[mask.fillna(False).astype(bool)]
    assert len(found) == 1, found
    return found.iloc[0]


TRAINED = [0.90, 0.92, 0.94]
FC1_REINIT0 = [0.50, 0.55, 0.62]
DRAWS = {0: [0.20, 0.30], 1: [0.25, 0.27], 2: [0.40, 0.10]}


def write_three_seeds(store: Store, **row) -> None:
    """Seeds 0-2 of widths (8, 4) with the accuracies above (``row``: more trial row fields,
    where ``spec_json`` may be a function of the seed)."""
    for seed, trained in enumerate(TRAINED):
        swaps = standard_swaps(
            trained, [FC1_REINIT0[seed], trained - 0.01, trained], rerandomize=DRAWS[seed]
        )
        fields = {k: v(seed) if callable(v) else v for k, v in row.items()}
        write_trial(store, f"a{seed}", swaps, seed=seed, trained=trained, **fields)


@pytest.fixture
def known_store(tmp_path: Path) -> Store:
    """Three seeds of widths (8, 4) with chosen accuracies, one seed of (16,), one unfinished."""
    store = Store.open(str(tmp_path / "store"))
    write_three_seeds(store)
    write_trial(store, "single", standard_swaps(0.8, [0.3, 0.79]), widths=(16,), trained=0.8)
    write_trial(store, "unfinished", standard_swaps(0.1, [0.0, 0.0, 0.0]), finished=False)
    return store


def test_columns_are_the_contract(known_store: Store) -> None:
    stats = read_back(known_store)
    assert list(stats.columns) == STATS_COLUMNS
    assert set(stats["widths"].map(tuple)) == {(8, 4), (16,)}  # "unfinished" left out


def test_mean_std_ci_against_scipy(known_store: Store) -> None:
    row = pick(read_back(known_store), "reinit", "fc1", 0)
    low, high = t_ci(FC1_REINIT0)
    assert row["n"] == 3
    assert row["mean_acc"] == pytest.approx(np.mean(FC1_REINIT0))
    assert row["std_acc"] == pytest.approx(np.std(FC1_REINIT0, ddof=1))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((low, high))
    assert (row["min_acc"], row["max_acc"]) == (0.50, 0.62)


def test_paired_drop_ci_excludes_zero(known_store: Store) -> None:
    row = pick(read_back(known_store), "reinit", "fc1", 0)
    drops = np.array(TRAINED) - np.array(FC1_REINIT0)  # 0.40, 0.37, 0.32
    low, high = t_ci(drops)
    assert row["mean_drop"] == pytest.approx(drops.mean())
    assert (row["drop_ci95_low"], row["drop_ci95_high"]) == pytest.approx((low, high))
    assert row["drop_ci95_low"] > 0
    # Paired: the drop of a constant offset has no spread although accuracies vary.
    offset = pick(read_back(known_store), "reinit", "fc2", 0)
    assert offset["mean_drop"] == pytest.approx(0.01)
    assert offset["drop_ci95_low"] == pytest.approx(0.01)
    assert offset["ci95_high"] - offset["ci95_low"] > 0.05


def test_rerandomize_draws_are_averaged_within_a_seed(known_store: Store) -> None:
    row = pick(read_back(known_store), "rerandomize", "fc1", None)
    per_seed = [np.mean(DRAWS[s]) for s in range(3)]
    assert row["n"] == 3
    assert row["mean_acc"] == pytest.approx(np.mean(per_seed))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(t_ci(per_seed))
    assert (row["min_acc"], row["max_acc"]) == pytest.approx((min(per_seed), max(per_seed)))


def test_a_single_seed_has_no_interval(known_store: Store) -> None:
    row = pick(read_back(known_store), "reinit", "fc1", 0, widths=(16,))
    assert row["n"] == 1
    assert row["mean_acc"] == pytest.approx(0.3) and row["mean_drop"] == pytest.approx(0.5)
    for column in ("std_acc", "ci95_low", "ci95_high", "drop_ci95_low", "drop_ci95_high"):
        assert math.isnan(row[column]), column


def test_trained_none_row_has_zero_drop(known_store: Store) -> None:
    row = pick(read_back(known_store), "none", None, 2)
    assert row["mean_acc"] == pytest.approx(np.mean(TRAINED))
    assert row["mean_drop"] == row["drop_ci95_low"] == row["drop_ci95_high"] == 0


def test_alpha_is_a_group_key_and_layers_sort_by_number(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    swaps: list[Swap] = [("none", None, 2, 0.9)]
    swaps += [("reinit", f"fc{i}", 0, 0.5) for i in (10, 2, 9, 1)]
    write_trial(store, "t", swaps)
    rows = swaps_table("t", [("interpolate", "fc1", None, a) for a in (0.6, 0.7)]).to_pylist()
    rows[0]["alpha"], rows[1]["alpha"] = 0.25, 0.5
    store.write_index("swaps", "u", pa.Table.from_pylist(rows, schema=SWAPS_SCHEMA))
    store.write_index("trials", "u", trial_table("u"))
    stats = read_back(store)
    reinit = stats[stats["kind"] == "reinit"]
    assert list(reinit["layer"]) == ["fc1", "fc2", "fc9", "fc10"]
    interpolate = stats[stats["kind"] == "interpolate"]
    assert list(interpolate["alpha"]) == [0.25, 0.5]
    assert list(interpolate["mean_acc"]) == [0.6, 0.7]
    assert sorted(["fc10", "fc9", "fc1"], key=layer_sort_key) == ["fc1", "fc9", "fc10"]


def test_arrow_and_csv_forms(known_store: Store) -> None:
    stats = read_back(known_store)
    table = stats_to_arrow(stats)
    assert table.schema == STATS_SCHEMA
    assert table.num_rows == len(stats)
    assert table.column("widths").to_pylist()[0] == [8, 4]
    csv = stats_to_csv(stats).splitlines()
    assert csv[0] == ",".join(STATS_COLUMNS)
    assert csv[1].startswith("demo,cfg-8-4,synthetic,mlp,8-4,none,,0,,3,")
    assert len(csv) == len(stats) + 1


def test_no_complete_trial_gives_an_empty_table(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    write_trial(store, "x", standard_swaps(0.9, [0.5]), finished=False)
    stats = read_back(store)
    assert stats.empty and list(stats.columns) == STATS_COLUMNS


@pytest.fixture
def mixed_store(tmp_path: Path) -> Store:
    """One sweep, widths (8, 4): three seeds at lr 0.05 and one network at lr 0.5."""
    store = Store.open(str(tmp_path / "store"))
    write_three_seeds(store, config_id="lr005", spec_json=lambda seed: spec_json_with(0.05, seed))
    write_trial(store, "b0", standard_swaps(0.5, [0.11, 0.45, 0.5]), seed=0, trained=0.5,
                config_id="lr05", spec_json=spec_json_with(0.5, 0))
    return store


def test_configurations_under_one_sweep_are_never_pooled(mixed_store: Store) -> None:
    stats = read_back(mixed_store)
    fc1 = stats[(stats["kind"] == "reinit") & (stats["layer"] == "fc1") & (stats["epoch"] == 0)]
    assert sorted(zip(fc1["config_id"], fc1["n"], strict=True)) == [("lr005", 3), ("lr05", 1)]
    pooled = fc1[fc1["config_id"] == "lr005"].iloc[0]
    assert pooled["mean_acc"] == pytest.approx(np.mean(FC1_REINIT0))
    single = fc1[fc1["config_id"] == "lr05"].iloc[0]
    assert single["mean_acc"] == pytest.approx(0.11)
    assert all(math.isnan(single[c]) for c in ("std_acc", "ci95_low", "ci95_high", "drop_ci95_low"))


def test_stats_agree_with_an_independent_computation(mixed_store: Store) -> None:
    """pandas + scipy from the raw index tables, every column of every row."""
    trials = mixed_store.read_index("trials").to_pandas()
    trials = trials[["trial_id", "sweep", "config_id", "seed", "test_acc"]]
    swaps = mixed_store.read_index("swaps").to_pandas()
    rows = swaps.merge(trials.rename(columns={"test_acc": "trained"}), on="trial_id")
    keys = ["sweep", "config_id", "kind", "layer", "epoch", "alpha"]
    per_seed = rows.groupby([*keys, "seed"], dropna=False).agg(
        acc=("test_acc", "mean"), trained=("trained", "first")
    )
    per_seed["drop"] = per_seed["trained"] - per_seed["acc"]
    stats = read_back(mixed_store)
    assert len(stats) == per_seed.groupby(level=keys, dropna=False).ngroups
    for _, row in stats.iterrows():
        mask = np.ones(len(per_seed), dtype=bool)
        for level in keys:
            values = per_seed.index.get_level_values(level)
            mask &= pd.isna(values) if pd.isna(row[level]) else (values == row[level])
        group = per_seed[mask]
        acc, drop = group["acc"].to_numpy(), group["drop"].to_numpy()
        n = len(acc)
        assert row["n"] == n
        spread = (acc.mean(), acc.min(), acc.max())
        assert (row["mean_acc"], row["min_acc"], row["max_acc"]) == pytest.approx(spread)
        assert row["mean_drop"] == pytest.approx(drop.mean())
        if n < 2:
            assert all(math.isnan(row[c]) for c in ("std_acc", "ci95_low", "ci95_high",
                                                     "drop_ci95_low", "drop_ci95_high"))
            continue
        assert row["std_acc"] == pytest.approx(acc.std(ddof=1))
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(t_ci_or_point(acc))
        assert (row["drop_ci95_low"], row["drop_ci95_high"]) == pytest.approx(t_ci_or_point(drop))


def t_ci_or_point(values: np.ndarray) -> tuple[float, float]:
    """scipy's t interval; with no spread at all (scipy gives NaN) the mean itself."""
    return t_ci(values) if values.std() else (values.mean(), values.mean())


def test_intervals_never_leave_what_accuracy_and_drops_can_be(tmp_path: Path) -> None:
    """Accuracies near 0 and 1 from 3 seeds: Student-t intervals reach past both ends; the table
    cuts them there and says where, and the mean's interval still holds every bound it held."""
    store = Store.open(str(tmp_path))
    near_zero, near_one = [0.01, 0.30, 0.02], [0.999, 0.70, 0.998]
    for seed, trained in enumerate(TRAINED):
        swaps = standard_swaps(trained, [near_zero[seed], near_one[seed]])
        write_trial(store, f"s{seed}", swaps, seed=seed, trained=trained)
    stats = read_back(store)
    measured = stats.dropna(subset=["ci95_low"])
    assert ((measured["ci95_low"] >= 0) & (measured["ci95_high"] <= 1)).all()
    trained = np.mean(TRAINED)
    assert ((measured["drop_ci95_low"] >= trained - 1 - 1e-12)
            & (measured["drop_ci95_high"] <= trained + 1e-12)).all()
    fc1, fc2 = pick(stats, "reinit", "fc1", 0), pick(stats, "reinit", "fc2", 0)
    raw_low, raw_high = t_ci(near_zero)
    assert raw_low < 0 and (fc1["ci95_low"], fc1["ci95_high"]) == pytest.approx((0.0, raw_high))
    # its drop cannot exceed the trained accuracy (accuracy 0): the interval stops there too
    assert fc1["ci95_clipped"] and fc1["drop_ci95_clipped"]
    assert fc1["drop_ci95_high"] == pytest.approx(trained)
    raw_low, raw_high = t_ci(near_one)
    assert raw_high > 1 and (fc2["ci95_low"], fc2["ci95_high"]) == pytest.approx((raw_low, 1.0))
    drops = np.array(TRAINED) - np.array(near_one)
    drop_low, drop_high = t_ci(drops)
    assert drop_low < trained - 1  # the t interval reaches below the lowest possible drop
    assert (fc2["drop_ci95_low"], fc2["drop_ci95_high"]) == pytest.approx((trained - 1, drop_high))
    assert fc2["ci95_clipped"] and fc2["drop_ci95_clipped"]
    trained_row = pick(stats, "none", None, 2)
    assert not trained_row["ci95_clipped"] and not trained_row["drop_ci95_clipped"]
    csv = stats_to_csv(stats).splitlines()
    assert csv[0].endswith(",config_name,ci95_clipped,drop_ci95_clipped,layer_index,depth,recalibrate")
