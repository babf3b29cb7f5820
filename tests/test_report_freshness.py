"""STORE/report is a function of the whole store's index: rebuilt when it changes, whole, with no
stale figure; said to be up to date only when it is. Real sweeps on a real Ray where one runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config.sweep_config import parse_config
from orchestrator.report.assemble import refresh_report, write_report
from orchestrator.report.publish import index_state, is_current
from orchestrator.run.sweep import run_sweep
from tests.helpers import build_partial_store, standard_swaps, tiny_raw_config, write_trial
from trainables.store import Store

UP_TO_DATE = "(up to date: built from the store's index as it is now)"


def linked_images(report: Path) -> set[str]:
    return set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (report / "report.md").read_text()))


def pngs(report: Path) -> set[str]:
    return {path.name for path in report.glob("*.png")}


def test_the_digest_follows_the_index_and_nothing_else(tmp_path: Path) -> None:
    store = build_partial_store(tmp_path / "store")
    before = index_state(store)
    store.write_bytes("report/anything.txt", b"x")  # the report's own folder is no input
    store.write_bytes("index/swaps/_half-written.parquet.tmp", b"x")  # nor a temporary file
    assert index_state(store) == before
    write_trial(store, "late0", standard_swaps(0.9, [0.5, 0.8, 0.9]), seed=5)
    after = index_state(store)
    assert after.files == before.files + 2 and after.digest != before.digest


def test_a_rebuild_is_whole_and_leaves_no_stale_figure(tmp_path: Path) -> None:
    store = build_partial_store(tmp_path / "store")
    report = tmp_path / "store" / "report"
    write_report(store)
    assert is_current(store)
    (report / "heatmap-a-configuration-gone.png").write_bytes(b"\x89PNG stale")
    write_trial(store, "late0", standard_swaps(0.9, [0.5, 0.8, 0.9]), seed=5)
    assert not is_current(store)
    refreshed = refresh_report(store)
    assert refreshed.written and refreshed.location == str(report)
    assert pngs(report) == linked_images(report)  # every figure is one this report shows
    record = json.loads((report / "report.json").read_text())
    assert record["index_digest"] == index_state(store).digest and record["sweep"] is None
    assert sorted(p.name for p in report.iterdir()) == record["files"]
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith("_")]  # no staging left
    stats = pd.read_csv(report / "stats.csv")
    fc1 = stats[(stats["kind"] == "reinit") & (stats["layer"] == "fc1") & (stats["epoch"] == 0)
                & (stats["widths"] == "8-4")]
    assert fc1["n"].tolist() == [4]  # seeds 0-2 and the late seed 5
    assert refresh_report(store).written == []  # current: nothing rewritten


def test_a_copy_elsewhere_removes_only_what_its_predecessor_wrote(tmp_path: Path) -> None:
    store = build_partial_store(tmp_path / "store")
    out = tmp_path / "paper"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    write_report(store, out_dir=str(out))
    (out / "compare.png").unlink()
    record = json.loads((out / "report.json").read_text())
    (out / "report.json").write_text(json.dumps({**record, "files": [*record["files"], "old-figure.png"]}))
    (out / "old-figure.png").write_bytes(b"\x89PNG")
    write_report(store, out_dir=str(out), sweep="demo")
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "old-figure.png").exists() and (out / "compare.png").exists()
    assert json.loads((out / "report.json").read_text())["sweep"] == "demo"
    assert not (tmp_path / "store" / "report").exists()


def sweep_config(tmp_path: Path, store: Path, name: str, widths: list[list[int]]) -> Path:
    raw = tiny_raw_config(store, name=name, widths=widths, epochs=2, checkpoints=[0, 2],
                          swaps=["reinit", "rerandomize"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def swept(local_ray, tmp_path_factory) -> tuple[Path, Path]:
    """A store with sweep "first" (widths [12, 6], 2 seeds) trained, without its report."""
    tmp = tmp_path_factory.mktemp("fresh")
    root = tmp / "store"
    config = sweep_config(tmp, root, "first", [[12, 6]])
    run_sweep(parse_config(yaml.safe_load(config.read_text())), log=lambda _: None)
    return tmp, root


def test_the_report_after_analyze_reflects_the_new_rows(swept, capsys) -> None:
    tmp, root = swept
    config = tmp / "first.yaml"
    assert main(["sweep", str(config)]) == 0  # nothing to train; the report did not exist: built
    out = capsys.readouterr().out
    assert f"report: {root / 'report'}\n" in out
    assert main(["sweep", str(config)]) == 0
    assert f"report: {root / 'report'} {UP_TO_DATE}" in capsys.readouterr().out
    assert main(["analyze", str(root), "--swaps", "rerandomize", "--draws", "3"]) == 0
    out = capsys.readouterr().out
    assert "(12 new rows)" in out and f"report: {root / 'report'}\n" in out  # 2 nets x 3 layers x 2 draws
    swaps = Store.open(str(root)).read_index("swaps").to_pandas()
    drawn = swaps[(swaps["kind"] == "rerandomize") & (swaps["layer"] == "fc1")]
    assert sorted(drawn["draw"]) == [0, 0, 1, 1, 2, 2]
    per_seed = drawn.groupby("trial_id")["test_acc"].mean()  # draws averaged per seed, then over seeds
    stats = pd.read_csv(root / "report" / "stats.csv")
    row = stats[(stats["kind"] == "rerandomize") & (stats["layer"] == "fc1")]
    assert row["mean_acc"].tolist() == pytest.approx([per_seed.mean()])
    assert main(["sweep", str(config)]) == 0
    assert UP_TO_DATE in capsys.readouterr().out


def test_two_sweeps_into_one_store_give_one_report_holding_both(swept, capsys) -> None:
    tmp, root = swept
    report = root / "report"
    if not (report / "report.json").exists():
        write_report(Store.open(str(root)))
    first_figures = pngs(report)
    assert main(["sweep", str(sweep_config(tmp, root, "second", [[8], [10]]))]) == 0
    assert f"report: {report}\n" in capsys.readouterr().out
    md = (report / "report.md").read_text()
    assert "## first: mlp, widths 12-6 · " in md  # a sweep of one configuration
    assert "## second: widths 8 · " in md and "## second: widths 10 · " in md
    assert "every sweep in it (2: first, second)" in md
    assert first_figures < pngs(report) == linked_images(report)
    stats = pd.read_csv(report / "stats.csv")
    assert list(dict.fromkeys(stats["sweep"])) == ["first", "second"]
    # one order everywhere: by the distinguishing value, numbers by size (not as text: "10" < "8")
    assert list(dict.fromkeys(stats.loc[stats["sweep"] == "second", "widths"])) == ["8", "10"]
    assert md.index("## second: widths 8 · ") < md.index("## second: widths 10 · ")
    assert main(["report", str(root), "--sweep", "second"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
