"""`layerswap report`: files written, figure data equal to the stats, partial and bad stores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.report import figures
from orchestrator.report.assemble import ReportError, write_report
from orchestrator.report.stats import STATS_SCHEMA, ConfigView, compute_stats, config_views
from orchestrator.report.verdicts import Thresholds
from tests.helpers import build_partial_store, standard_swaps, write_trial
from trainables.store import Store, StoreError

WIDE, NARROW = (8, 4), (6,)


def view_of(stats, widths: tuple[int, ...]) -> ConfigView:
    (view,) = [view for view in config_views(stats) if view.key.widths == widths]
    return view


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[str]]:
    store = build_partial_store(tmp_path_factory.mktemp("partial") / "store")
    return store, write_report(store)


def stats_of(store: Store):
    return compute_stats(store.read_index("trials"), store.read_index("swaps"))


def test_files_are_written_and_not_empty(reported) -> None:
    store, written = reported
    names = {Path(p).name for p in written}
    assert {"stats.parquet", "stats.csv", "report.md", "report.html", "compare.png"} <= names
    for key in ("demo-synthetic-mlp-8-4-cfg-8-4", "demo-synthetic-mlp-6-cfg-6"):
        assert {f"heatmap-{key}.png", f"bars-{key}.png"} <= names
    for path in written:
        assert Path(path).parent == Path(store.root) / "report"
        data = Path(path).read_bytes()
        assert len(data) > 100
        if path.endswith(".png"):
            assert data.startswith(b"\x89PNG")


def test_stats_files_match_the_computation(reported) -> None:
    store, _ = reported
    expected = stats_of(store)
    table = pq.read_table(Path(store.root) / "report" / "stats.parquet")
    assert table.schema == STATS_SCHEMA
    assert table.column("mean_drop").to_pylist() == pytest.approx(list(expected["mean_drop"]))
    csv = (Path(store.root) / "report" / "stats.csv").read_text().splitlines()
    assert len(csv) == table.num_rows + 1
    assert any(line.startswith("demo,cfg-8-4,synthetic,mlp,8-4,reinit,fc1,0,,3,") for line in csv)


def test_report_says_what_is_complete_and_missing(reported) -> None:
    store, _ = reported
    md = (Path(store.root) / "report" / "report.md").read_text()
    assert "| 4 / 6 |" in md
    assert "2 network(s) missing" in md and "narrow1, narrow2" in md
    assert "1 network(s) have swap rows but no trial row" in md
    assert "fc1 is sensitive: putting it back to its initial weights costs 37.0 ± " in md
    assert "fc2, fc3 are robust" in md
    assert "No layer is critical" in md
    assert "| unclear (n=1) |" in md and "single seed (n=1)" in md
    assert "demo holds 2 configurations, differing in:" in md
    html = (Path(store.root) / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert 'src="heatmap' not in html and "fc1 is sensitive" in html


def test_heatmap_matrix_matches_stats(reported) -> None:
    store, _ = reported
    stats = stats_of(store)
    heat = figures.heatmap_matrix(view_of(stats, WIDE))
    assert heat.rows == ("fc1", "fc2", "fc3", figures.FULL_MODEL)
    assert heat.columns == ("rerandomize", "epoch 0", "epoch 1", "epoch 2 (trained)")
    wide = stats[stats["widths"].map(tuple) == (8, 4)]

    def acc(kind, layer, epoch):
        m = (wide["kind"] == kind) & (
            wide["layer"].isna() if layer is None else wide["layer"] == layer
        )
        m &= wide["epoch"].isna() if epoch is None else wide["epoch"] == epoch
        (value,) = wide.loc[m.fillna(False).astype(bool), "mean_acc"]
        return value

    for i, layer in enumerate(["fc1", "fc2", "fc3"]):
        assert heat.error[i, 0] == pytest.approx(1 - acc("rerandomize", layer, None))
        assert heat.error[i, 1] == pytest.approx(1 - acc("reinit", layer, 0))
        assert heat.error[i, 2] == pytest.approx(1 - acc("reinit", layer, 1))
        assert heat.error[i, 3] == pytest.approx(1 - acc("none", None, 2))
    assert math.isnan(heat.error[3, 0])
    assert heat.error[3, 1:] == pytest.approx([1 - acc("none", None, e) for e in (0, 1, 2)])
    assert heat.error[0, 1] == pytest.approx(1 - np.mean([0.5, 0.55, 0.6]))
    # (6,) has no rerandomize measurements: no such column.
    assert figures.heatmap_matrix(view_of(stats, NARROW)).columns[0] == "epoch 0"


def test_bar_and_profile_data_match_stats(reported) -> None:
    store, _ = reported
    stats = stats_of(store)
    bars = figures.bar_data(view_of(stats, WIDE), chance=0.1)
    assert bars.layers == ("fc1", "fc2", "fc3")
    assert bars.mean[0] == pytest.approx([0.55, 0.91, 0.92])  # reinit@0
    assert bars.mean[1] == pytest.approx([0.1, 0.2, 0.3])  # transplant
    assert bars.trained == pytest.approx(0.92)
    assert np.all(bars.low <= bars.mean) and np.all(bars.mean <= bars.high)
    profile = figures.drop_profile(view_of(stats, WIDE), "reinit", 0, "wide")
    assert profile.drop == pytest.approx([0.37, 0.01, 0.0])
    assert profile.low[0] > 0.05
    assert profile.depth == pytest.approx([0.0, 0.5, 1.0])  # first layer 0, output layer 1
    narrow = figures.drop_profile(view_of(stats, NARROW), "reinit", 0, "narrow")
    assert narrow.depth == pytest.approx([0.0, 1.0])


def test_out_dir_sweep_and_threshold(tmp_path: Path) -> None:
    store = build_partial_store(tmp_path / "store")
    out = tmp_path / "elsewhere"
    written = write_report(store, out_dir=str(out), sweep="demo", thresholds=Thresholds(robust_drop=0.5))
    assert all(Path(p).parent == out for p in written)
    md = (out / "report.md").read_text()
    assert "No layer is critical" in md and "fc1–fc3 are robust (drop's 95% CI below 50 points)" in md
    assert not (Path(store.root) / "report").exists()
    with pytest.raises(StoreError, match="no sweep named 'other'"):
        write_report(store, out_dir=str(out), sweep="other")
    with pytest.raises(ReportError, match="a report of sweep 'demo' alone needs --out DIR"):
        write_report(store, sweep="demo")  # STORE/report always covers every sweep


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "something").mkdir()
    with pytest.raises(StoreError) as err:
        write_report(Store.open(str(tmp_path / "something")))
    assert "is not a layerswap store (no index/trials)" in _one_line(err)


def test_empty_store(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    record = {"sweep": "demo", "config": {}, "trial_ids": ["a", "b"]}
    store.write_bytes("sweeps/demo/x.json", json.dumps(record).encode())
    write_trial(store, "a", standard_swaps(0.9, [0.5]), finished=False)
    with pytest.raises(ReportError) as err:
        write_report(store)
    assert "no complete trials to report (demo: 0 of 2 finished)" in _one_line(err)


@pytest.mark.parametrize(
    "table",
    [
        pa.table({"trial_id": ["x"], "widths": ["8-4"]}),  # a column of the wrong type
        pa.table({"name": ["x"], "accuracy": [0.5]}),  # another table altogether
    ],
)
def test_wrong_schema_store(tmp_path: Path, table: pa.Table) -> None:
    (tmp_path / "index" / "trials").mkdir(parents=True)
    pq.write_table(table, tmp_path / "index" / "trials" / "x.parquet")
    with pytest.raises(StoreError) as err:
        write_report(Store.open(str(tmp_path)))
    assert "trials" in _one_line(err)


def test_not_parquet(tmp_path: Path) -> None:
    (tmp_path / "index" / "trials").mkdir(parents=True)
    (tmp_path / "index" / "trials" / "x.parquet").write_text("not parquet")
    with pytest.raises(StoreError) as err:
        write_report(Store.open(str(tmp_path)))
    assert "not a readable Parquet file" in _one_line(err)
