"""Train once, measure forever: new swap kinds and draws on stored networks, without training.

Real Ray (the session's local instance), real store files; the measurements
added later are checked against a store that measured everything at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from orchestrator.catalog.contents import load_contents
from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.analyze import analyze_store
from orchestrator.run.sweep import run_sweep
from tests.helpers import standard_swaps, tiny_raw_config, trial_table, write_trial
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.store.schemas import SWAPS_SCHEMA, TRIALS_SCHEMA


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (sha256 of its bytes, mtime in ns)."""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and not str(path.relative_to(root)).startswith(("tune", "report", "sweeps"))
    }


def swap_rows(root: Path) -> list[dict]:
    return ds.dataset(root / "index" / "swaps", schema=SWAPS_SCHEMA, format="parquet").to_table().to_pylist()


def key(row: dict) -> tuple:
    return (row["trial_id"], row["kind"], row["layer"], row["epoch"], row["alpha"], row["draw"])


def raw_config(store: Path, swaps: list[str], **overrides) -> dict:
    return tiny_raw_config(
        store, widths=[[12, 6]], seeds=2, epochs=2, checkpoints=[0, 2], swaps=swaps, **overrides
    )


@pytest.fixture(scope="module")
def grown(local_ray, tmp_path_factory):
    """A sweep measured with [reinit], then the same sweep with [reinit, transplant]."""
    root = tmp_path_factory.mktemp("grown") / "store"
    first = run_sweep(parse_config(raw_config(root, ["reinit"])), log=lambda _: None)
    before = file_states(root)
    lines: list[str] = []
    second = run_sweep(parse_config(raw_config(root, ["reinit", "transplant"])), log=lines.append)
    return root, first, before, second, lines


def test_a_grown_swap_list_trains_nothing_and_rewrites_no_file(grown) -> None:
    root, first, before, second, lines = grown
    assert (first.completed, first.failed) == (2, 0)
    assert (second.total, second.skipped, second.completed, second.failed) == (2, 2, 0, 0)
    assert (second.measured.networks, second.measured.rows, second.measured.failed) == (2, 2 * 3, 0)
    after = file_states(root)
    assert {path: after[path] for path in before} == before  # same bytes, same mtimes
    added = sorted(set(after) - set(before))
    ids = sorted(spec.trial_id for spec in expand_grid(parse_config(raw_config(root, ["reinit"]))))
    assert len(added) == 2
    for path, trial_id in zip(added, ids, strict=True):
        assert re.fullmatch(rf"index/swaps/{trial_id}-[0-9a-f]{{8}}\.parquet", path)
    assert any("2 already trained, 0 to train, 2 to measure (6 new rows)" in line for line in lines)


def test_rows_measured_later_equal_rows_measured_at_training(grown, tmp_path: Path) -> None:
    root = grown[0]
    later = {key(r): r for r in swap_rows(root)}
    assert len(later) == len(swap_rows(root))  # one row per key
    assert {k[1] for k in later} == {"none", "reinit", "transplant"}
    at_once = tmp_path / "at-once"
    run_sweep(parse_config(raw_config(at_once, ["reinit", "transplant"])), log=lambda _: None)
    direct = {key(r): r for r in swap_rows(at_once)}
    assert set(direct) == set(later)  # the same networks (ids) and the same keys
    for k, row in direct.items():
        assert later[k]["test_acc"] == row["test_acc"], k
        assert later[k]["test_loss"] == pytest.approx(row["test_loss"], rel=1e-9), k


def test_analyze_adds_draws_once(grown) -> None:
    root = grown[0]
    store = Store.open(str(root))
    first = analyze_store(store, swaps=("rerandomize",), draws=2, log=lambda _: None)
    assert (first.networks, first.rows, first.failed) == (2, 2 * 3 * 2, 0)
    rows = swap_rows(root)
    drawn = [r for r in rows if r["kind"] == "rerandomize"]
    assert sorted({r["draw"] for r in drawn}) == [0, 1] and len(drawn) == 12
    assert load_contents(store).unfinished == ()  # a batch file is not a trial of its own
    before = file_states(root)
    again = analyze_store(store, swaps=("rerandomize",), draws=2, log=lambda _: None)
    assert (again.networks, again.rows) == (0, 0)
    assert file_states(root) == before


def test_analyze_cli_prints_progress_and_is_idempotent(grown, capsys) -> None:
    root = grown[0]
    assert main(["analyze", str(root), "--swaps", "rerandomize", "--draws", "3"]) == 0
    out = capsys.readouterr().out
    header = "analyze: 2 networks, 2 to measure (6 new rows); measuring swaps rerandomize (3 draws); store "
    assert header in out
    assert re.search(r"measured 2/2, failed 0 \| [0-9a-f]{16} 3 rows", out)
    assert main(["analyze", str(root), "--swaps", "rerandomize", "--draws", "3"]) == 0
    header = "analyze: 2 networks, 0 to measure (0 new rows); measuring nothing; store "
    assert header in capsys.readouterr().out


def test_analyze_refuses_unknown_kinds(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["analyze", str(tmp_path), "--swaps", "reinit,shuffle"])
    assert exited.value.code == 2
    assert "'reinit,shuffle': allowed kinds are reinit, rerandomize, transplant" in capsys.readouterr().err


def test_analyze_refuses_zero_draws(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path), "--draws", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["layerswap: error: --draws: 0 is not allowed; expected an integer >= 1"]


V1_SPEC = (
    '{"batch_size":8,"checkpoints":[0,1,2],"data_mean":0.0,"data_std":1.0,"dataset":"synthetic",'
    '"epochs":2,"model":"mlp","optimizer":{"lr":0.1,"momentum":0.0,"name":"sgd","weight_decay":0.0},'
    '"precision":"fp32","rerandomize_draws":1,"seed":0,"swaps":["reinit"],"widths":[8,4]}'
)


def version1_store(root: Path) -> Store:
    """A store as version 1 wrote it: no layerswap.json, trial rows without config_id."""
    store = Store.open(str(root))
    write_trial(store, "0123456789abcdef", standard_swaps(0.9, [0.5, 0.8]), finished=False)
    row = trial_table("0123456789abcdef").to_pylist()[0] | {"config_id": None, "spec_json": V1_SPEC}
    store.write_index("trials", "0123456789abcdef", pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))
    return store


def test_a_version1_store_is_refused_for_writing_and_still_read(tmp_path: Path, capsys) -> None:
    root = tmp_path / "v1"
    store = version1_store(root)
    assert store.version() == 1
    before = file_states(root)
    assert main(["analyze", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a version-1 store" in err[0] and "analyze writes version-2 stores" in err[0]
    config = tmp_path / "c.yaml"
    config.write_text(f"name: tiny\ndataset: synthetic\nwidths: [[4]]\nseeds: 1\nepochs: 1\n"
                      f"batch_size: 8\noptimizer: {{name: sgd, lr: 0.1}}\nswaps: [reinit]\nstore: {root}\n")
    assert main(["sweep", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep writes version-2 stores" in err[0]
    assert file_states(root) == before
    assert main(["ls", str(root)]) == 0
    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    stats = (tmp_path / "report" / "stats.csv").read_text()
    config_id = TrialSpec.from_dict(json.loads(V1_SPEC)).config_id  # the swap plan dropped
    assert f"demo,{config_id},synthetic,mlp,8-4,reinit,fc1,0,," in stats


def test_a_new_store_gets_the_version_marker(grown) -> None:
    root = grown[0]
    assert (root / "layerswap.json").read_text() == '{"store_version": 2}'
    assert Store.open(str(root)).version() == 2
