"""`layerswap ls`: the trial table, counts per sweep, what is missing from a sweep's grid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.catalog.contents import load_contents
from orchestrator.catalog.listing import format_listing
from tests.helpers import spec_json_with, standard_swaps, write_trial
from trainables.store import Store, StoreError


def record(store: Store, sweep: str, ids: list[str], name: str = "cfg") -> None:
    data = {"sweep": sweep, "config": {"name": sweep}, "trial_ids": ids}
    store.write_bytes(f"sweeps/{sweep}/{name}.json", json.dumps(data).encode())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Sweep "a": grid a0-a2 (over two configs), a0 and a1 done, a2 unfinished.
    Sweep "b": grid [a1, b0], b0 done; a1 (run by "a") counts for "b" too.
    Sweep "c": one trial, no config stored."""
    store = Store.open(str(tmp_path / "store"))
    write_trial(store, "a0", standard_swaps(0.9, [0.5]), sweep="a", seed=0, trained=0.9)
    write_trial(store, "a1", standard_swaps(0.9, [0.5]), sweep="a", seed=1, trained=0.9123)
    write_trial(store, "a2", standard_swaps(0.9, [0.5]), sweep="a", finished=False)
    write_trial(store, "b0", standard_swaps(0.9, [0.5]), sweep="b", widths=(32, 16), trained=0.8)
    write_trial(store, "c0", standard_swaps(0.9, [0.5]), sweep="c", trained=0.7)
    record(store, "a", ["a0", "a1"], "old")
    record(store, "a", ["a1", "a2"], "new")
    record(store, "b", ["a1", "b0"])
    return store


def test_table_and_counts(store: Store) -> None:
    text = format_listing(store)
    lines = text.split("\n\n")[0].splitlines()
    header = ["sweep", "configuration", "seed", "trial_id", "test_acc", "node", "finished_at"]
    assert lines[0].split() == header
    # one configuration in sweep a: named by model and widths, its config_id's start as a suffix
    row = "a      mlp, widths 8-4 · cfg-8-4  1     a1        91.23%    node-1  2025-01-02 03:04:05 UTC"
    assert row in lines
    # sweep b holds two configurations: named by the widths that tell them apart, smaller first
    b_rows = [re.split(r"\s{2,}", line)[1] for line in lines if line.startswith("b ")]
    assert b_rows == ["widths 8-4 · cfg-8-4", "widths 32-16 · cfg-32-1"]  # b0 and the shared a1
    counts = text.split("\n\n")[1].splitlines()
    assert counts[0].split() == ["sweep", "complete", "expected", "missing"]
    assert counts[2].split() == ["a", "2", "3", "1"]
    assert counts[3].split() == ["b", "2", "2", "0"]
    assert counts[4].split()[:3] == ["c", "1", "?"] and "no config stored" in counts[4]
    assert "1 trial(s) started but not finished: a2" in text


def test_one_sweep(store: Store) -> None:
    contents = load_contents(store, "a")
    assert sorted(contents.trials.column("trial_id").to_pylist()) == ["a0", "a1"]
    (status,) = contents.sweeps
    assert (status.complete, status.expected, status.missing) == (2, 3, ("a2",))
    assert contents.unfinished == ("a2",)
    assert set(contents.swaps.column("trial_id").to_pylist()) == {"a0", "a1"}
    assert "c0" not in format_listing(store, sweep="a")


def test_store_with_only_a_config(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    record(store, "a", ["x", "y"])
    text = format_listing(store)
    assert text.startswith("no complete trials yet")
    assert text.splitlines()[-1].split() == ["a", "0", "2", "2"]


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"is not a layerswap store \(no index/trials\)"):
        format_listing(Store.open(str(tmp_path)))


def test_bad_sweep_record(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    store.write_bytes("sweeps/a/x.json", b"{not json")
    with pytest.raises(StoreError, match="is not a sweep record"):
        format_listing(store)


def test_two_learning_rates_in_one_sweep_are_told_apart(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path))
    for seed in (1, 0):
        for lr, config_id in ((0.5, "0123456789abcdef"), (0.05, "fedcba9876543210")):
            trial_id = f"{config_id[:14]}{seed:02d}"
            write_trial(store, trial_id, standard_swaps(0.9, [0.5]), sweep="lr", seed=seed,
                        config_id=config_id, spec_json=spec_json_with(lr, seed))
    lines = format_listing(store).split("\n\n")[0].splitlines()[2:]
    assert [line.split()[:6] for line in lines] == [
        ["lr", "lr", "0.05", "·", "fedcba98", "0"],
        ["lr", "lr", "0.05", "·", "fedcba98", "1"],
        ["lr", "lr", "0.5", "·", "01234567", "0"],
        ["lr", "lr", "0.5", "·", "01234567", "1"],
    ]
    assert [line.split()[6] for line in lines] == [
        "fedcba9876543200", "fedcba9876543201", "0123456789abcd00", "0123456789abcd01"
    ]
