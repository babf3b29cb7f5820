"""The report along a sweep's grid axes: a stats column per axis, per-layer accuracy, the
generalisation gap and criticality against each axis. Real index files and sweep records read back
by the report; one real grid sweep on Ray."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import open_store
from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.report import axis_plots
from orchestrator.report.assemble import write_report
from orchestrator.report.axes import sweep_axes
from orchestrator.report.axis_figures import axis_figure, axis_network_figure, axis_positions
from orchestrator.report.censoring import AT_MOST, RESOLVED
from orchestrator.report.layer_stats import LAYER_STATS_COLUMNS, compute_layer_stats, read_measures
from orchestrator.report.sections import config_infos
from orchestrator.report.stats import STATS_COLUMNS, compute_stats, config_views
from orchestrator.run.sweep import run_sweep
from tests.helpers import GRID_SWEEP, standard_swaps, swaps_table, tiny_raw_config, trial_table
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.store.schemas import CRITICALITY_SCHEMA, TRIALS_SCHEMA

LRS = (0.01, 0.03, 0.1)
WIDTHS = ((8, 4), (6,))


def fc1_reinit(lr: float, seed: int) -> float:
    """fc1's reinit@0 accuracy: lower at a higher learning rate."""
    return 0.6 - lr - 0.02 * seed


def network_criticality(lr: float, seed: int) -> float:
    return 1e5 * (1 + 10 * lr) * (1 + 0.1 * seed)


def criticality_table(trial_id: str, lr: float, seed: int) -> pa.Table:
    """fc1 resolved, fc2 an upper bound (its best sigma is sigma_max); their sum is the network's."""
    half = network_criticality(lr, seed) / 2
    rows = [
        dict(trial_id=trial_id, layer=layer, criticality=half, alpha_star=1.0, sigma_star=sigma,
             loss_at_star=0.2, trained_loss=0.2, n_alpha=5, n_sigma=5, sigma_max=0.01, noise_samples=4,
             rtol=1.01, subset_size=1000, noise_seed=seed)
        for layer, sigma in (("fc1", 0.005), ("fc2", 0.01))
    ]
    return pa.Table.from_pylist(rows, schema=CRITICALITY_SCHEMA)


def write_network(store: Store, sweep: str, lr: float, widths: tuple[int, ...], seed: int,
                  criticality: bool) -> str:
    """One network with its real spec id, swap rows and a train accuracy (gap = lr / 10 + 0.001 *
    seed); its trial row last."""
    spec = TrialSpec.from_dict({
        "dataset": "synthetic", "data_mean": 0.0, "data_std": 1.0, "model": "mlp", "widths": list(widths),
        "seed": seed, "epochs": 2, "batch_size": 8, "optimizer": {"name": "sgd", "lr": lr},
        "checkpoints": [0, 1, 2],
    })
    trained = 0.9 - lr + 0.01 * seed
    reinit = [fc1_reinit(lr, seed)] + [trained - 0.02] * len(widths)
    swaps = standard_swaps(trained, reinit, rerandomize=[0.1 + lr])
    store.write_index("swaps", spec.trial_id, swaps_table(spec.trial_id, swaps))
    if criticality:
        store.write_index("criticality", spec.trial_id, criticality_table(spec.trial_id, lr, seed))
    row = trial_table(spec.trial_id, sweep=sweep, widths=widths, seed=seed, trained=trained,
                      config_id=spec.config_id, spec_json=spec.canonical_json().decode())
    row = row.to_pylist()[0] | {"train_acc": trained + lr / 10 + 0.001 * seed, "lr": lr}
    store.write_index("trials", spec.trial_id, pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))
    return spec.trial_id


def write_sweep(store: Store, sweep: str, lrs, widths_list, seeds: int, grid: dict | None,
                criticality: bool = False) -> None:
    """Every (lr, widths, seed) network of a sweep, then its record (``grid`` in its config when
    given)."""
    ids = [write_network(store, sweep, lr, widths, seed, criticality)
           for lr in lrs for widths in widths_list for seed in range(seeds)]
    config = {"name": sweep, **({"grid": grid} if grid else {})}
    record = json.dumps({"sweep": sweep, "config": config, "trial_ids": ids}).encode()
    store.write_bytes(f"sweeps/{sweep}/{hashlib.sha256(record).hexdigest()[:16]}.json", record)


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Sweep "grid": 3 learning rates x 2 widths x 2 seeds, with criticality; sweep "plain": one
    configuration (lr 0.5) and no grid."""
    store = Store.open(str(tmp_path_factory.mktemp("grid") / "store"))
    write_sweep(store, "grid", LRS, WIDTHS, 2, {"optimizer.lr": list(LRS)}, criticality=True)
    write_sweep(store, "plain", (0.5,), WIDTHS[:1], 2, None)
    write_report(store)
    return store


def report_dir(store: Store) -> Path:
    return Path(store.root) / "report"


def test_stats_and_layer_stats_have_a_column_per_axis_null_for_a_sweep_without_it(grid_store) -> None:
    assert sweep_axes(grid_store) == {"grid": ("optimizer.lr",)}
    table = pq.read_table(report_dir(grid_store) / "stats.parquet")
    assert table.column_names == [*STATS_COLUMNS, "optimizer.lr"]  # DESIGN.md's columns first
    assert table.schema.field("optimizer.lr").type == pa.float64()
    stats = table.to_pandas()
    trials = grid_store.read_index("trials").to_pandas().set_index("config_id")["lr"]
    grid = stats[stats["sweep"] == "grid"]
    assert grid["config_id"].nunique() == 6
    assert (grid["optimizer.lr"] == grid["config_id"].map(lambda c: trials.loc[c].iloc[0])).all()
    assert sorted(set(grid["optimizer.lr"])) == list(LRS)
    assert stats.loc[stats["sweep"] == "plain", "optimizer.lr"].isna().all()
    csv = pd.read_csv(report_dir(grid_store) / "stats.csv")
    assert list(csv.columns) == list(table.column_names)
    pd.testing.assert_series_equal(csv["optimizer.lr"], stats["optimizer.lr"], check_dtype=False)
    layer_stats = pq.read_table(report_dir(grid_store) / "layer_stats.parquet")
    assert layer_stats.column_names == [*LAYER_STATS_COLUMNS, "optimizer.lr"]
    gaps = layer_stats.to_pandas().query("quantity == 'gen_gap'")
    assert sorted(gaps["optimizer.lr"].dropna()) == sorted(LRS * 2) and gaps["optimizer.lr"].isna().sum() == 1
    pd.testing.assert_frame_equal(open_store(grid_store.root).stats(), table.to_pandas())


def test_the_report_names_the_axes_and_links_the_figures_along_them(grid_store) -> None:
    md = (report_dir(grid_store) / "report.md").read_text()
    run = md[md.index("## What was run"):md.index("## Baselines")]
    assert "grid is a grid over optimizer.lr (0.01, 0.03, 0.1), times its widths and seeds" in run
    assert "plain is a grid" not in run
    section = md[md.index("## grid: along the grid axes"):]
    assert "## plain: along the grid axes" not in md
    assert "![per-layer accuracy against optimizer.lr, grid](axis-grid-optimizer.lr.png)" in section
    assert "one panel per combination of widths, held fixed within it" in section
    assert "(axis-networks-grid-optimizer.lr.png)" in section
    for name in ("axis-grid-optimizer.lr.png", "axis-networks-grid-optimizer.lr.png"):
        assert (report_dir(grid_store) / name).read_bytes().startswith(b"\x89PNG")
        assert name in json.loads((report_dir(grid_store) / "report.json").read_text())["files"]
    table = section[section.index("### Generalisation gap and network criticality by configuration"):]
    assert "| configuration | optimizer.lr | generalisation gap (points) | network criticality (" in table
    assert table.count("| widths ") == 6 and "| 0.03 | 0.4 ± 0.6 |" in table and "(upper bounds)" in table
    html = (report_dir(grid_store) / "report.html").read_text()
    assert "along the grid axes" in html


def views_and_infos(store: Store):
    trials, swaps = store.read_index("trials"), store.read_index("swaps")
    axes = sweep_axes(store)
    stats = compute_stats(trials, swaps, axes)
    layer_stats = compute_layer_stats(trials, *read_measures(store, trials.column("trial_id")), axes)
    views = [view for view in config_views(stats) if view.key.sweep == "grid"]
    infos = config_infos(trials)
    specs = {view.key.config_id: infos[("grid", view.key.config_id)].spec for view in views}
    chances = {view.key.config_id: infos[("grid", view.key.config_id)].chance for view in views}
    return stats, layer_stats, views, specs, chances


def test_the_figure_data_holds_each_layers_accuracy_at_each_axis_value(grid_store) -> None:
    stats, _, views, specs, chances = views_and_infos(grid_store)
    data = axis_figure(views, specs, chances, "optimizer.lr")
    assert data is not None
    assert (data.axis.values, data.axis.ticks, data.axis.scale) == (LRS, ("0.01", "0.03", "0.1"), "log")
    assert data.fixed == ("widths",) and data.kinds == ("reinit@0", "rerandomize")
    assert [panel.title for panel in data.panels] == ["widths 6", "widths 8-4"]
    wide = data.panels[1]
    assert wide.layers == ("fc1", "fc2", "fc3") and wide.depth.tolist() == [0.0, 0.5, 1.0]
    assert wide.x.tolist() == list(LRS) and [name.split(" · ")[0] for name in wide.configs] == [
        f"widths 8-4, lr {lr:g}" for lr in LRS
    ]
    rows = stats[(stats["sweep"] == "grid") & (stats["widths"].map(tuple) == (8, 4))]
    for j, lr in enumerate(LRS):
        at = rows[rows["optimizer.lr"] == lr]
        fc1 = at[(at["kind"] == "reinit") & (at["layer"] == "fc1") & (at["epoch"] == 0)].iloc[0]
        assert wide.mean[0, 0, j] == pytest.approx(np.mean([fc1_reinit(lr, 0), fc1_reinit(lr, 1)]))
        assert (wide.low[0, 0, j], wide.high[0, 0, j]) == (fc1["ci95_low"], fc1["ci95_high"])
        assert wide.mean[1, 2, j] == pytest.approx(0.1 + lr)  # rerandomize, fc3
        assert wide.trained[j] == pytest.approx(0.9 - lr + 0.005)
    assert wide.chance.tolist() == [0.1] * 3
    assert np.isnan(data.panels[0].mean).sum() == 0 and data.panels[0].layers == ("fc1", "fc2")


def test_the_gap_and_criticality_against_the_axis_are_the_layer_stats(grid_store) -> None:
    _, layer_stats, views, specs, _ = views_and_infos(grid_store)
    settings = layer_stats.loc[layer_stats["quantity"] == "network_criticality", "settings"].iloc[0]
    data = axis_network_figure(views, specs, layer_stats, "optimizer.lr", settings)
    assert data is not None and [panel.title for panel in data.panels] == ["widths 6", "widths 8-4"]
    panel = data.panels[1]
    assert panel.gap == pytest.approx([lr / 10 + 0.0005 for lr in LRS])
    expected = [np.exp(np.mean(np.log([network_criticality(lr, s) for s in (0, 1)]))) for lr in LRS]
    assert panel.criticality is not None and panel.criticality.geo == pytest.approx(expected)
    assert panel.criticality.censoring == (AT_MOST,) * 3  # fc2 is at sigma_max: the sum is a bound
    figure = axis_plots.plot_axis_networks(data, "t")
    criticality_axes = figure.axes[0]
    assert criticality_axes.get_yscale() == "log" and criticality_axes.get_xscale() == "log"
    open_markers = [line for line in criticality_axes.get_lines()
                    if line.get_marker() == "o" and line.get_markerfacecolor() == "white"]
    assert len(open_markers) == 3 and RESOLVED not in panel.criticality.censoring


def test_the_drawing_puts_the_values_on_the_axis_with_a_line_per_layer(grid_store) -> None:
    _, _, views, specs, chances = views_and_infos(grid_store)
    data = axis_figure(views, specs, chances, "optimizer.lr")
    figure = axis_plots.plot_axis_layers(data, "t")
    assert len(figure.axes) == 2 * 2  # reinit@0 and rerandomize, for each of the 2 widths
    axes = figure.axes[1]  # widths 8-4, reinit@0
    assert axes.get_xscale() == "log"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["0.01", "0.03", "0.1"]
    assert axes.get_ylim() == (0, 101.5) and "widths 8-4" in axes.get_title()
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["trained network", "chance (1/n_classes)"]  # the panels differ in depth:
    panel_legends = [[t.get_text() for t in figure.axes[i].get_legend().get_texts()] for i in (0, 1)]
    assert panel_legends == [["fc1", "fc2"], ["fc1", "fc2", "fc3"]]  # each names its own layers
    one = axis_plots.plot_axis_layers(dataclasses.replace(data, panels=data.panels[1:]), "t")
    assert [text.get_text() for text in one.legends[0].get_texts()] == [
        "fc1", "fc2", "fc3", "trained network", "chance (1/n_classes)"
    ]
    assert one.axes[0].get_legend() is None
    lines = [line for line in axes.get_lines() if line.get_marker() in ("o", "s", "^")]  # not the caps
    assert [line.get_marker() for line in lines] == ["o", "s", "^"]  # fc1-fc3, a marker each
    assert len({str(line.get_color()) for line in lines}) == 3
    assert len({line.get_linestyle() for line in lines}) == 3
    assert [len(line.get_xdata()) for line in lines] == [3, 3, 3]


def test_axis_scales_follow_the_values() -> None:
    assert axis_positions("optimizer.lr", [0.1, 0.01, 0.1]).values == (0.01, 0.1)
    assert axis_positions("optimizer.lr", [0.1, 0.01]).scale == "log"
    assert axis_positions("optimizer.lr", [0.01, 0.02]).scale == "linear"  # less than 4x apart
    assert axis_positions("optimizer.momentum", [0.9, 0]).scale == "linear"  # 0 has no log
    precision = axis_positions("precision", ["fp32", "bf16"])
    assert (precision.scale, precision.ticks) == ("category", ("bf16", "fp32"))
    assert precision.position("fp32") == 1.0
    assert axis_positions("optimizer.nesterov", [True, False]).ticks == ("off", "on")
    assert axis_positions("checkpoints", [(0, 3), (0, 1, 3)]).ticks == ("0-1-3", "0-3")
    assert axis_positions("optimizer.lr", []).values == ()  # no configuration has a value


def test_more_panels_than_a_figure_shows_are_a_table(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    many = tuple((w,) for w in range(5, 12))  # 7 widths: 7 panels along lr
    write_sweep(store, "wide", (0.01, 0.1), many, 1, {"optimizer.lr": [0.01, 0.1]})
    write_report(store)
    md = (report_dir(store) / "report.md").read_text()
    section = md[md.index("## wide: along the grid axes"):]
    assert "7 combinations of widths are more panels than a figure shows legibly (at most 6)" in section
    assert "| widths | swap | layer | optimizer.lr 0.01 (%) | optimizer.lr 0.1 (%) |" in section
    cells = f"{100 * fc1_reinit(0.01, 0):.1f} | {100 * fc1_reinit(0.1, 0):.1f}"
    assert f"| widths 5 | reinit@0 | fc1 | {cells} |" in section
    assert "at most 2 values of optimizer.lr per panel" in section
    assert not list(report_dir(store).glob("axis-*.png"))


def test_a_real_grid_sweep_reports_along_its_axis_and_a_plain_sweep_does_not(
    local_ray, grid_sweep, tmp_path, capsys
):
    swept, grid, _ = grid_sweep  # lr 0.1 and 0.05, reinit and rerandomize (shared with tests/test_grid.py)
    store = tmp_path / "store"
    shutil.copytree(swept, store)  # this test sweeps into it
    common = {key: GRID_SWEEP[key] for key in ("epochs", "checkpoints", "swaps")}
    plain = run_sweep(parse_config(tiny_raw_config(store, name="plain", widths=[[12]], seeds=2,
                                                   optimizer={"name": "sgd", "lr": 0.2}, **common)),
                      log=lambda line: None)
    assert (grid.completed, plain.completed) == (8, 2)
    assert main(["report", str(store)]) == 0
    capsys.readouterr()
    written = pq.read_table(store / "report" / "stats.parquet").to_pandas()
    assert list(written.columns) == [*STATS_COLUMNS, "optimizer.lr"]
    tiny = written[written["sweep"] == "tiny"]
    lrs = {row["config_id"]: row["lr"] for row in Store.open(str(store)).read_index("trials").to_pylist()}
    assert tiny["config_id"].nunique() == 4
    assert (tiny["optimizer.lr"] == tiny["config_id"].map(lrs)).all()
    assert sorted(set(tiny["optimizer.lr"])) == [0.05, 0.1]
    assert written.loc[written["sweep"] == "plain", "optimizer.lr"].isna().all()
    pd.testing.assert_frame_equal(open_store(store).stats(), written)
    md = (store / "report" / "report.md").read_text()
    assert "![per-layer accuracy against optimizer.lr, tiny](axis-tiny-optimizer.lr.png)" in md
    assert (store / "report" / "axis-tiny-optimizer.lr.png").read_bytes().startswith(b"\x89PNG")
    assert "## plain: along the grid axes" not in md and not list((store / "report").glob("axis-plain*"))
    views = [view for view in config_views(written) if view.key.sweep == "tiny"]
    infos = config_infos(Store.open(str(store)).read_index("trials"))
    specs = {view.key.config_id: infos[("tiny", view.key.config_id)].spec for view in views}
    data = axis_figure(views, specs, {}, "optimizer.lr")
    assert data is not None and [panel.title for panel in data.panels] == ["widths 12", "widths 16-8"]
    narrow = data.panels[0]
    fc1 = written[(written["sweep"] == "tiny") & (written["kind"] == "reinit") & (written["layer"] == "fc1")
                  & (written["widths"].map(tuple) == (12,))].sort_values("optimizer.lr")
    assert narrow.x.tolist() == [0.05, 0.1] and narrow.mean[0, 0].tolist() == fc1["mean_acc"].tolist()
    assert narrow.layers == ("fc1", "fc2") and data.kinds == ("reinit@0", "rerandomize")


def test_a_store_without_a_grid_has_no_axis_columns_and_no_axis_section(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    write_sweep(store, "plain", (0.01, 0.1), WIDTHS[:1], 2, None, criticality=True)  # lr differs, no grid
    write_report(store)
    assert sweep_axes(store) == {}
    assert pq.read_table(report_dir(store) / "stats.parquet").column_names == STATS_COLUMNS
    assert pq.read_table(report_dir(store) / "layer_stats.parquet").column_names == LAYER_STATS_COLUMNS
    assert (report_dir(store) / "stats.csv").read_text().splitlines()[0] == ",".join(STATS_COLUMNS)
    md = (report_dir(store) / "report.md").read_text()
    assert "along the grid axes" not in md and "is a grid over" not in md
    assert not list(report_dir(store).glob("axis-*.png"))
