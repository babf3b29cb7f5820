"""Module criticality in the report: censored scores flagged, summaries on the log scale, a scatter
of configurations only with enough of them. Real index files, read back by the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from matplotlib.lines import Line2D
from scipy import stats as st

from orchestrator.report import figures, plots
from orchestrator.report.assemble import write_report
from orchestrator.report.censoring import AT_A_BOUND, AT_LEAST, AT_MOST, RESOLVED, censoring
from tests.helpers import spec_json_with, standard_swaps, trial_table, write_trial
from trainables.store import Store
from trainables.store.schemas import CRITICALITY_SCHEMA, TRIALS_SCHEMA

SIGMA_MAX = 0.01
FC1 = [2.0e5, 8.0e5, 4.5e6]  # resolved: the best sigma lies inside the grid
FC2 = [3.0e4, 6.0e4, 1.2e5]  # censored: the best sigma is sigma_max, the grid's top


def test_censoring_is_read_from_the_stored_columns() -> None:
    rows = pd.DataFrame({
        "criticality": [1e5, 1e5, math.nan, 1e5, 1e5, 1e5, 1e5],
        "sigma_star": [SIGMA_MAX, SIGMA_MAX / 2, math.nan, SIGMA_MAX / 2, SIGMA_MAX, 1e-3, 1e-6],
        "sigma_max": [SIGMA_MAX] * 7,
    })
    assert censoring(rows).tolist() == [AT_MOST, RESOLVED, AT_LEAST, RESOLVED, AT_MOST, RESOLVED, RESOLVED]
    # rows of a bisection search say themselves, and their bounds say which way
    rows["censored"] = [True, False, True, True, False, True, True]
    rows["sigma_lo"] = [1e-6] * 7
    rows["sigma_hi"] = [SIGMA_MAX, SIGMA_MAX, SIGMA_MAX, SIGMA_MAX, SIGMA_MAX, 2e-3, 2e-3]
    # the last sits at sigma_lo: it passed there, so the true criticality is at most its score
    assert censoring(rows).tolist() == [AT_MOST, RESOLVED, AT_LEAST, AT_A_BOUND, RESOLVED, AT_A_BOUND,
                                        AT_MOST]


def criticality_rows(trial_id: str, seed: int) -> pa.Table:
    rows = [
        dict(trial_id=trial_id, layer=layer, criticality=values[seed], alpha_star=1.0, sigma_star=sigma,
             loss_at_star=0.2, trained_loss=0.2, n_alpha=5, n_sigma=5, sigma_max=SIGMA_MAX, noise_samples=4,
             rtol=1.01, subset_size=1000, noise_seed=seed)
        for layer, values, sigma in (("fc1", FC1, SIGMA_MAX / 4), ("fc2", FC2, SIGMA_MAX))
    ]
    return pa.Table.from_pylist(rows, schema=CRITICALITY_SCHEMA)


def write_config(store: Store, lr: float, config_id: str, gap: float) -> None:
    """Three seeds of one configuration (differing in lr) with criticality rows and a train accuracy."""
    for seed in range(3):
        trial_id = f"{config_id[:14]}{seed:02d}"
        write_trial(store, trial_id, standard_swaps(0.9, [0.5, 0.85]), finished=False)
        store.write_index("criticality", trial_id, criticality_rows(trial_id, seed))
        row = trial_table(trial_id, seed=seed, config_id=config_id, spec_json=spec_json_with(lr, seed))
        row = row.to_pylist()[0] | {"train_acc": 0.9 + gap + 0.001 * seed}
        store.write_index("trials", trial_id, pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))


@pytest.fixture
def two_configs(tmp_path: Path) -> tuple[Store, Path]:
    store = Store.open(str(tmp_path / "store"))
    write_config(store, 0.05, "0123456789abcdef", 0.01)
    write_config(store, 0.5, "fedcba9876543210", 0.03)
    write_report(store)
    return store, tmp_path / "store" / "report"


def test_a_censored_criticality_is_flagged_and_summarised_on_the_log_scale(two_configs) -> None:
    _, report = two_configs
    stats = pd.read_parquet(report / "layer_stats.parquet")
    rows = stats[(stats["quantity"] == "criticality") & (stats["config_id"] == "0123456789abcdef")]
    fc1, fc2 = (rows[rows["layer"] == layer].iloc[0] for layer in ("fc1", "fc2"))
    logs = np.log(FC1)
    low, high = st.t.interval(0.95, 2, loc=logs.mean(), scale=st.sem(logs))
    assert fc1["geo_mean"] == pytest.approx(math.exp(logs.mean()))
    assert (fc1["geo_ci95_low"], fc1["geo_ci95_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert fc1["geo_ci95_low"] > 0  # a Student-t interval of the raw scores reaches below 0 here
    assert fc1["mean"] - st.t.ppf(0.975, 2) * np.std(FC1, ddof=1) / math.sqrt(3) < 0
    assert (fc1["n_censored"], fc1["censoring"]) == (0, "")
    assert (fc2["n"], fc2["n_measured"], fc2["n_censored"], fc2["censoring"]) == (3, 3, 3, AT_MOST)
    network = stats[(stats["quantity"] == "network_criticality") & (stats["config_id"] == "0123456789abcdef")]
    assert network["censoring"].tolist() == [AT_MOST]  # a sum with upper bounds in it is one
    md = (report / "report.md").read_text()
    section = md[md.index("## demo: lr 0.05 · 01234567"):md.index("## demo: lr 0.5 · fedcba98")]
    assert f"| fc1 | {fc1_text(fc1)} | 2.0e5 – 4.5e6 | none |" in section
    assert "| fc2 | ≤ 6.0e4 [" in section and "| 3 of 3 (upper bounds) |" in section
    assert "Half of the criticality scores here are censored (3 of 6 layer scores are upper bounds" in section
    assert "raise criticality.sigma_max in the sweep config (now 0.01)" in section


def fc1_text(row: pd.Series) -> str:
    def short(value: float) -> str:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"

    return f"{short(row['geo_mean'])} [{short(row['geo_ci95_low'])}, {short(row['geo_ci95_high'])}]"


def test_censored_points_are_drawn_open_with_an_arrow() -> None:
    points = figures.LogPoints(("fc1", "fc2", "fc3"), np.array([1e6, 6e4, np.nan]),
                               np.array([4e5, 3e4, np.nan]), np.array([2e6, 1e5, np.nan]),
                               (RESOLVED, AT_MOST, AT_LEAST))
    axes = plots.plot_log_points(points, "t", "layer", "criticality").axes[0]
    markers = [line for line in axes.get_lines() if line.get_marker() == "o"]
    assert [line.get_markerfacecolor() != "white" for line in markers] == [True, False]
    arrows = [a for a in axes.texts if a.arrow_patch is not None]
    assert len(arrows) == 1 and arrows[0].xy[1] < 6e4  # pointing down: the truth is lower
    assert [t.get_text() for t in axes.texts if t.get_text()] == ["no value"]
    assert axes.get_yscale() == "log"
    legend = axes.figure.legends[0]
    assert any("upper bound" in text.get_text() for text in legend.get_texts())
    assert all(isinstance(handle, Line2D) for handle in legend.legend_handles)


def test_a_scatter_of_configurations_needs_three(two_configs, tmp_path: Path) -> None:
    store, report = two_configs
    md = (report / "report.md").read_text()
    assert "## demo: network criticality against the generalisation gap" in md
    assert "| lr 0.05 · 01234567 | 1.1 ± " in md and "With 2 configurations a scatter plot" in md
    assert not (report / "criticality-gap-demo.png").exists()
    write_config(store, 0.1, "5555555555555555", 0.02)
    write_report(store)
    md = (report / "report.md").read_text()
    assert "![network criticality against generalisation gap, demo](criticality-gap-demo.png)" in md
    assert (report / "criticality-gap-demo.png").read_bytes().startswith(b"\x89PNG")
    record = json.loads((report / "report.json").read_text())
    assert "criticality-gap-demo.png" in record["files"]
