"""``layerswap verify --repair`` through the real CLI: keys stored twice collapse into one new batch
file, rows measured later from weights that no longer match their index are deleted (and measured
again by ``analyze`` once the file is restored); nothing else is rewritten."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from orchestrator.cli import main
from tests.helpers import trained_store
from trainables.measure.row_keys import batch_relpath
from trainables.plan import row_key
from trainables.spec import TrialSpec
from trainables.store import Store, layout
from trainables.store.schemas import SWAPS_SCHEMA


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[TrialSpec]]:
    """Two networks (checkpoints 0, 1, 2) measured with reinit, written without Ray."""
    root = tmp_path_factory.mktemp("repair") / "store"
    specs = trained_store(root, epochs=2, checkpoints=[0, 1, 2])
    return root, specs


@pytest.fixture
def copy(pristine, tmp_path) -> tuple[Path, list[TrialSpec]]:
    root, specs = pristine
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", specs


def rows_of(trial_id: str, kind: str, layers: list[str], accuracy: float, epoch: int | None = 2,
            draws: list[int | None] | None = None) -> list[dict]:
    return [
        {"trial_id": trial_id, "kind": kind, "layer": layer, "epoch": epoch, "alpha": None, "draw": draw,
         "test_acc": accuracy, "test_loss": 1.0, "n_test": 256}
        for layer in layers for draw in (draws or [None])
    ]


def write_batch(store: Store, rows: list[dict]) -> str:
    """Rows as a writer would store them: one batch file named by the hash of its keys."""
    relpath = batch_relpath(rows[0]["trial_id"], [row_key(row) for row in rows])
    store.write_table(relpath, "swaps", pa.Table.from_pylist(rows, schema=SWAPS_SCHEMA))
    return relpath


def raw_rows(root: Path, trial_id: str) -> list[dict]:
    """What a raw pyarrow (or DuckDB) reader sees: every row of every visible file."""
    files = sorted(str(p) for p in (root / "index" / "swaps").glob(f"{trial_id}*.parquet"))
    return ds.dataset(files, schema=SWAPS_SCHEMA, format="parquet").to_table().to_pylist()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_keys_measured_twice_collapse_into_one_new_file(copy, capsys):
    root, (first, _) = copy
    store = Store.open(str(root))
    # a sweep adding transplant and an analyze of transplant and rerandomize, at once, without claims
    transplant = rows_of(first.trial_id, "transplant", ["fc1", "fc2"], 0.5)
    one = write_batch(store, transplant)
    two = write_batch(store, rows_of(first.trial_id, "transplant", ["fc1", "fc2"], 0.6)
                      + rows_of(first.trial_id, "rerandomize", ["fc1", "fc2"], 0.3, None, [0]))
    base = root / layout.index_path("swaps", first.trial_id)
    base_digest = digest(base)
    assert len(raw_rows(root, first.trial_id)) == 7 + 2 + 4  # 7 keys in the base file; 2 stored twice

    assert main(["verify", str(root)]) == 2
    out = capsys.readouterr().out
    earlier, later = sorted([one, two])  # verify names the files in the order readers read them
    assert out.count(f"is measured 2 times, in {earlier} and {later}; --repair keeps one") == 2, out

    assert main(["verify", str(root), "--repair"]) == 0
    out = capsys.readouterr().out
    # the collapsed file holds the keys of the second, so it takes that name (replaced atomically)
    assert [f"index/swaps/{p.name}" for p in (root / "index" / "swaps").glob(f"{first.trial_id}-*")] == [two]
    assert (f"repaired index/swaps of trial {first.trial_id}: 2 duplicate row(s) and 0 row(s) measured "
            f"from damaged weights dropped; 4 rows kept in {two}; removed {one}") in out, out
    assert out.rstrip().endswith("ok: 2 trials, 8 files verified")
    rows = raw_rows(root, first.trial_id)
    assert len(rows) == len({row_key(row) for row in rows}) == 7 + 4
    first_read = 0.5 if one < two else 0.6  # files are read in name order; the first row of a key stays
    assert {row["test_acc"] for row in rows if row["kind"] == "transplant"} == {first_read}
    assert digest(base) == base_digest  # the trial's own file is not rewritten


def test_rows_measured_from_damaged_weights_are_deleted_and_measured_again(local_ray, copy, pristine, capsys):
    root, (first, second) = copy
    store = Store.open(str(root))
    assert main(["analyze", str(root), "--swaps", "interpolate"]) == 0  # 2 networks x 2 layers x 11 alphas
    capsys.readouterr()
    (measured,) = [p.name for p in (root / "index" / "swaps").glob(f"{first.trial_id}-*.parquet")]
    weights = root / layout.weights_path(first.trial_id, 2)
    good = weights.read_bytes()
    data = bytearray(good)
    data[-50] ^= 0xFF  # the file is damaged after the rows were measured (or they were measured from it)
    weights.write_bytes(bytes(data))
    base = root / layout.index_path("swaps", first.trial_id)
    base_digest = digest(base)

    assert main(["verify", str(root), "--repair"]) == 2  # the weights file itself cannot be repaired
    out, err = capsys.readouterr()
    assert (f"repaired index/swaps of trial {first.trial_id}: 0 duplicate row(s) and 22 row(s) measured "
            f"from damaged weights dropped; no rows left; removed index/swaps/{measured}") in out, out
    assert f"after repair: {layout.weights_path(first.trial_id, 2)} (trial {first.trial_id}): tensor" in out
    assert "problem(s) in 1 of 2 trials after repair" in err
    assert not (root / "index" / "swaps" / measured).exists()
    assert digest(base) == base_digest  # rows measured at training, from the weights in memory, stay
    assert store.exists(layout.index_path("swaps", second.trial_id))

    assert main(["analyze", str(root), "--swaps", "interpolate"]) == 2  # refused while the file is damaged
    capsys.readouterr()
    weights.write_bytes(good)  # restored from a copy
    assert main(["analyze", str(root), "--swaps", "interpolate"]) == 0
    assert "analyze: 1 networks measured (22 new rows), 0 failed" in capsys.readouterr().out
    assert main(["verify", str(root)]) == 0
