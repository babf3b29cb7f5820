"""Hardening, through the real CLI: bad configs, unusable stores, damaged stores, secrets,
clusters that do not answer, interrupts, temporary names and import cost.

Every refusal is checked the same way: the exit code, exactly one line on
stderr, no traceback, and the store byte for byte as it was (every file hashed
before and after).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import trainables.store.store as store_module
from orchestrator import cli
from orchestrator.config.blocks import MAX_NETWORKS
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import load_config, parse_config
from tests.helpers import tiny_raw_config
from tests.test_s3_store import BUCKET, s3_endpoint  # noqa: F401  (fixture: a moto S3 server)
from trainables.data.datasets import load_dataset
from trainables.store import Store, layout
from trainables.worker.pack_job import Placement, run_network

ROOT = Path(__file__).resolve().parent.parent


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its bytes ("dir" for directories)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory) -> tuple[Path, str]:
    """A store of one complete trial, written without Ray: (root, trial id)."""
    root = tmp_path_factory.mktemp("hardening") / "store"
    config = parse_config(tiny_raw_config(root, widths=[[8]], seeds=1, epochs=1, checkpoints=[0, 1],
                                          swaps=["reinit"]))
    (spec,) = expand_grid(config)
    run_network(spec, config.plan, load_dataset("synthetic").tensors("cpu"), Store.open(str(root)),
                config.name, Placement.here(torch.device("cpu")))
    return root, spec.trial_id


@pytest.fixture
def store(pristine_store, tmp_path) -> tuple[Path, str]:
    root, trial_id = pristine_store
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", trial_id


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, expected: str, prefix: str = "layerswap: error: ") -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and expected in lines[0], err
    assert "Traceback" not in err
    return lines[0]


# --- bad configs: refused before anything runs --------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)

BAD_CONFIGS = [
    # (case, how the config text is made from a valid one, text the error line must contain)
    ("alias bomb", lambda text: BOMB, "through its aliases"),
    ("too many aliases", lambda text: "x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n",
     "more than 100 aliases"),
    ("not UTF-8", lambda text: text.encode() + b"# caf\xe9\n", "is not UTF-8 text (byte 0xe9"),
    ("deep nesting", lambda text: text + "extra: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 32"),
    ("duplicate key", lambda text: text + "epochs: 5\n", "key 'epochs' appears twice"),
    ("not a mapping", lambda text: "- 1\n- 2\n", "must be a YAML mapping of fields, got [1, 2]"),
    ("name too long", lambda text: text.replace("name: tiny", "name: " + "x" * 300), "name: 'xxxxx"),
    ("name with NUL", lambda text: text.replace("name: tiny", 'name: "a\\0b"'), "name: 'a\\x00b'"),
    ("name with slash", lambda text: text.replace("name: tiny", "name: a/b"), "name: 'a/b'"),
    ("name with backslash", lambda text: text.replace("name: tiny", "name: a\\b"), "name: 'a\\\\b'"),
    ("name with newline", lambda text: text.replace("name: tiny", 'name: "a\\nb"'), "name: 'a\\nb'"),
    ("seeds beyond the grid bound", lambda text: text.replace("seeds: 2", "seeds: 1000000000"),
     f"more than {MAX_NETWORKS} networks"),
    ("grid bound with several widths", lambda text: text.replace("seeds: 2", "seeds: 600000"),
     "600000 seeds x 2 width configs"),
    ("seed beyond int64", lambda text: text.replace("seeds: 2", "seeds: [1, 9223372036854775808]"),
     "seeds: 9223372036854775808"),
    ("batch_size beyond int32", lambda text: text.replace("batch_size: 64", "batch_size: 2147483648"),
     "batch_size: 2147483648 is not allowed; expected an integer in [1, 2147483647]"),
    ("epochs beyond int32", lambda text: text.replace("epochs: 3", "epochs: 2147483648"),
     "epochs: 2147483648"),
    ("width beyond int32", lambda text: text.replace("- 12", "- 2147483648"), "widths: [2147483648]"),
    ("long value echoed short", lambda text: text.replace("dataset: synthetic", "dataset: " + "y" * 10_000),
     "dataset: 'yyyyy"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_line_and_the_store_is_untouched(store, tmp_path, capsys, make, expected):
    root, _ = store
    before = snapshot(root)
    text = make(yaml.safe_dump(tiny_raw_config(root), sort_keys=False))
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = run_cli(capsys, "sweep", str(config))
    assert code == 2
    line = assert_one_line(err, expected)
    assert len(line) < 400
    assert out == ""
    assert snapshot(root) == before


def test_yaml_floats_resolve_as_in_yaml_1_2(tmp_path):
    raw = tiny_raw_config(tmp_path / "store")
    text = yaml.safe_dump(raw).replace("lr: 0.1", "lr: 1e-3")
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml").optimizer.lr == 0.001


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
    monkeypatch.setattr(store_module, "REACH_TIMEOUT_S", 5.0)
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


# --- the command line itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sweep"], "layerswap sweep: the following arguments are required: config"),
        (["sweep", "x.yaml", "--connect-timeout", "0"], "'0' is not a number of seconds > 0"),
        (["sweep", "x.yaml", "--seeds", "many"], "argument --seeds: invalid int value: 'many'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_command_line_is_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert_one_line(capsys.readouterr().err, expected)


def test_a_bug_is_one_line_naming_a_log_with_the_traceback(tmp_path, capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("boom while reading s3://AKIDHARDEN:SECRETHARDEN99@bucket/p")

    monkeypatch.setenv("LAYERSWAP_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setitem(cli.COMMANDS, "ls", broken)
    code, _, err = run_cli(capsys, "ls", "somewhere")
    assert code == 1
    line = assert_one_line(
        err, "RuntimeError: boom while reading s3://***@bucket/p", prefix="layerswap: internal error: "
    )
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert "SECRETHARDEN99" not in text + err


# --- in subprocesses: imports, clusters that do not answer, SIGTERM, secrets in a real sweep ----


def python(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


HEAVY = ("torch", "ray", "pyarrow")


def test_help_and_a_refused_config_import_nothing_heavy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store", epochs=0)))
    script = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"assert main(['sweep', {str(bad)!r}]) == 2\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = python("-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert result.stderr.splitlines() == [
        "layerswap: error: epochs: 0 is not allowed; expected an integer in [1, 2147483647]"
    ]


@pytest.fixture
def silent_listener():
    """host:port of a socket that accepts connections and never answers (not a Ray)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("listening", [False, True], ids=["nothing listening", "not a Ray"])
@pytest.mark.parametrize("command", ["sweep", "preflight"])
def test_an_address_where_no_ray_answers_is_one_line(tmp_path, silent_listener, command, listening):
    """Each run ends in about 5 s (--connect-timeout) after start-up, far under 90 s."""
    address = silent_listener if listening else f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store")))
    argv = ["sweep", str(config)] if command == "sweep" else ["preflight"]
    result = python("-m", "orchestrator.cli", *argv, "--address", address, "--connect-timeout", "5",
                    LAYERSWAP_LOG_DIR=str(tmp_path / "logs"))
    assert result.returncode == 2
    line = assert_one_line(result.stderr, "cluster: ")
    assert address in line and "check that Ray runs there" in line
    assert ("within 5 s" in line) == listening
    assert not (tmp_path / "store").exists()


def test_sigterm_stops_a_sweep_and_the_store_stays_readable(tmp_path):
    root = tmp_path / "store"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(
        root, widths=[[16]], seeds=4, epochs=200, checkpoints=[0, 200], swaps=["reinit"],
        resources={"cpu_per_trial": 1, "gpu_per_trial": 0}, pack=1,
    )))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in sweep.stdout:
            if " trial(s) of " in line:  # Ray is up and the trials are about to start
                break
        sweep.send_signal(signal.SIGTERM)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, err
    assert err.splitlines()[-1:] == [
        "layerswap: interrupted; finished trials are kept, run the same command again to resume"
    ]
    assert "Traceback" not in err
    store = Store.open(str(root))
    for table in ("trials", "weights", "swaps"):
        store.read_index(table)  # whatever was written is whole
    assert [p for p in root.rglob("*.parquet") if p.name.startswith("_")] == []


def test_credentials_are_in_no_stored_file_after_a_sweep(s3_endpoint, tmp_path):  # noqa: F811
    uri = (f"s3://AKIDHARDEN:SECRETHARDEN99@{BUCKET}/secrets?endpoint_override={s3_endpoint}"
           "&scheme=http")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(
        "unused", widths=[[8]], seeds=1, epochs=1, checkpoints=[0, 1], swaps=["reinit"],
        resources={"cpu_per_trial": 1, "gpu_per_trial": 0},
    )))
    result = python("-m", "orchestrator.cli", "sweep", str(config), "--store", uri, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"store: s3://***@{BUCKET}/secrets?endpoint_override=" in result.stdout
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http")
    files = [info.path for info in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/secrets", recursive=True))
             if info.type == pafs.FileType.File]
    assert any(path.endswith("report/report.md") for path in files)
    assert any("/sweeps/tiny/" in path for path in files) and any("/tune/" in path for path in files)
    for path in files:
        with fs.open_input_stream(path) as stream:
            data = stream.read()
        assert b"SECRETHARDEN99" not in data and b"AKIDHARDEN" not in data, path
    assert "SECRETHARDEN99" not in result.stdout + result.stderr
    # and Ray's start-up notices stay off the terminal
    assert "TensorBoard" not in result.stdout + result.stderr
    assert "Token authentication" not in result.stderr


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
