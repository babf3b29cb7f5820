"""Stores that cannot be used or are damaged, through the real CLI: unusable URIs (credentials
never echoed), damaged index files that ls and report refuse and verify names, temporary names.

Every refusal is checked the same way: the exit code, exactly one line on
stderr, no traceback, and the store byte for byte as it was (every file hashed
before and after).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import trainables.store.store as store_module
from tests.helpers import BUCKET, assert_one_line, run_cli, snapshot, tiny_raw_config
from trainables.store import Store, layout

ROOT = Path(__file__).resolve().parent.parent


# --- stores that cannot be used: refused before Ray starts --------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/proc/self/layerswap-store", "store: cannot write to '/proc/self/layerswap-store'"),
        ("s3://", "store: 's3://' names no bucket; use s3://bucket/prefix"),
        ("s3:///prefix", "store: pyarrow cannot open 's3:///prefix' (Missing bucket name"),
        ("gs://layerswap-no-network/x", "gs://layerswap-no-network/x"),
        ("nosuchfs://bucket/prefix", "pyarrow cannot open 'nosuchfs://bucket/prefix'"),
    ],
    ids=["unwritable", "s3 without bucket", "s3 empty bucket", "gs without network", "unknown scheme"],
)
def test_unusable_store_is_one_line(tmp_path, capsys, monkeypatch, uri, expected):
    monkeypatch.setattr(store_module, "REACH_TIMEOUT_S", 2.0)  # gs without network: this long
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "unused")))
    code, out, err = run_cli(capsys, "sweep", str(config), "--store", uri)
    assert code == 2
    assert_one_line(err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://AKIDHARDEN:SECRETHARDEN99@{bucket}/p?endpoint_override=127.0.0.1:1&scheme=http",
        "s3://{bucket}/p?endpoint_override=127.0.0.1:1&scheme=http&access_key=AKIDHARDEN"
        "&secret_key=SECRETHARDEN99&session_token=SECRETHARDEN99",
    ],
    ids=["user-info", "query options"],
)
def test_credentials_never_reach_the_error_line(tmp_path, capsys, monkeypatch, uri):
    monkeypatch.setattr(store_module, "REACH_TIMEOUT_S", 10.0)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "unused")))
    code, out, err = run_cli(capsys, "sweep", str(config), "--store", uri.format(bucket=BUCKET))
    assert code == 2
    line = assert_one_line(err, "store: ")
    assert "SECRETHARDEN99" not in out + err and "AKIDHARDEN" not in out + err
    assert "***" in line


# --- damaged stores: ls and report refuse with one line, verify names the file ------------------


def truncate_swaps(root: Path, trial_id: str) -> str:
    path = root / layout.index_path("swaps", trial_id)
    path.write_bytes(path.read_bytes()[:100])
    return layout.index_path("swaps", trial_id)


def overwrite_column(root: Path, table_name: str, trial_id: str, column: str, value: str) -> str:
    """Set ``column`` of every row of the trial's ``table_name`` index file to ``value``; its relpath."""
    path = root / layout.index_path(table_name, trial_id)
    table = pq.read_table(path)
    values = pa.array([value] * table.num_rows, pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, values), path)
    return layout.index_path(table_name, trial_id)


def foreign_trial_id(root: Path, trial_id: str) -> str:
    return overwrite_column(root, "trials", trial_id, "trial_id", "../../../../etc/passwd")


def weights_row_outside(root: Path, trial_id: str) -> str:
    return overwrite_column(root, "weights", trial_id, "path", "../../outside.safetensors")


def unknown_kind(root: Path, trial_id: str) -> str:
    return overwrite_column(root, "swaps", trial_id, "kind", "shuffle")


def stray_index_file(root: Path, trial_id: str) -> str:
    shutil.copy(root / layout.index_path("swaps", trial_id), root / "index" / "swaps" / "evil.parquet")
    return "index/swaps/evil.parquet"


DAMAGES = [
    (truncate_swaps, "not a readable Parquet file"),
    (foreign_trial_id, "holds rows of trial id '../../../../etc/passwd'"),
    (weights_row_outside, "points at '../../outside.safetensors'"),
    (unknown_kind, "swap kind 'shuffle' is not one of"),
    (stray_index_file, "not named after a trial id"),
]


@pytest.mark.parametrize(("damage", "expected"), DAMAGES, ids=[d[0].__name__ for d in DAMAGES])
def test_verify_names_each_damaged_index_file(store, capsys, damage, expected):
    root, trial_id = store
    relpath = damage(root, trial_id)
    before = snapshot(root)
    code, out, err = run_cli(capsys, "verify", str(root))
    assert code == 2  # problems found (1 is for bugs)
    assert f"{relpath} (trial " in out and expected in out, out
    assert_one_line(err, "problem(s) in")
    assert "etc/passwd (trial" not in out  # nothing outside the store was read
    assert snapshot(root) == before


def test_ls_and_report_refuse_a_truncated_index_file(store, capsys):
    root, trial_id = store
    relpath = truncate_swaps(root, trial_id)
    before = snapshot(root)
    for command in ("ls", "report"):
        code, _, err = run_cli(capsys, command, str(root))
        assert code == 2
        assert_one_line(err, relpath)
    assert snapshot(root) == before


def test_sweep_record_whose_trial_ids_is_a_string_is_refused(store, capsys):
    root, trial_id = store
    record = root / "sweeps" / "tiny" / "0123456789abcdef.json"
    record.parent.mkdir(parents=True)
    record.write_text(f'{{"sweep": "tiny", "config": {{}}, "trial_ids": "{trial_id}"}}')
    before = snapshot(root)
    code, _, err = run_cli(capsys, "ls", str(root))
    assert code == 2
    assert_one_line(err, "is not a sweep record: 'sweep' must be a name, 'trial_ids' a list of trial ids")
    assert snapshot(root) == before


# --- temporary names ----------------------------------------------------------------------------


def test_a_concurrent_duckdb_glob_never_sees_a_temporary_file(store):
    root, trial_id = store
    writer_store = Store.open(str(root))
    rows = writer_store.read_index("swaps")
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(300):
                writer_store.write_index("swaps", f"{i:016x}", rows.set_column(
                    0, "trial_id", pa.array([f"{i:016x}"] * rows.num_rows, pa.string())))
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: set[str] = set()
    connection = duckdb.connect()
    pattern = str(root / "index" / "*" / "*.parquet")
    while not done.is_set():
        names = connection.sql(f"SELECT file FROM glob('{pattern}')").fetchall()
        seen.update(Path(name).name for (name,) in names)
        connection.sql(f"SELECT count(*) FROM read_parquet('{root}/index/swaps/*.parquet')").fetchall()
    writer.join()
    assert len(seen) > 3
    assert [name for name in seen if name.startswith("_") or not name.endswith(".parquet")] == []
    assert len(list((root / "index" / "swaps").iterdir())) == 301

