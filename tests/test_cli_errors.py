"""The command line itself, through the real CLI: bad arguments, bugs, import cost, clusters that
do not answer, SIGTERM, and no credentials in any stored file after a real sweep.

Every refusal is checked the same way: the exit code, exactly one line on
stderr, no traceback, and the store byte for byte as it was (every file hashed
before and after).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from orchestrator import cli
from tests.helpers import (
    BUCKET,
    assert_one_line,
    free_port,
    ray_processes_of,
    run_cli,
    tiny_raw_config,
    wait_until_listening,
)
from trainables.store import Store

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize("listening", [False, True], ids=["nothing listening", "not a Ray"])
@pytest.mark.parametrize("command", ["sweep", "preflight"])
def test_an_address_where_no_ray_answers_is_one_line(tmp_path, silent_listener, command, listening):
    """Each run ends in about 2 s (--connect-timeout) after start-up, far under 90 s."""
    address = silent_listener if listening else f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store")))
    argv = ["sweep", str(config)] if command == "sweep" else ["preflight"]
    result = python("-m", "orchestrator.cli", *argv, "--address", address, "--connect-timeout", "2",
                    LAYERSWAP_LOG_DIR=str(tmp_path / "logs"))
    assert result.returncode == 2
    line = assert_one_line(result.stderr, "cluster: ")
    assert address in line and "check that Ray runs there" in line
    assert ("within 2 s" in line) == listening
    assert not (tmp_path / "store").exists()


@pytest.fixture
def token_cluster(tmp_path):
    """host:port of a real Ray head (``ray start --head``) that wants Ray's authentication token;
    stopped, with every process it started, afterwards."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        wait_until_listening(port, head, "ray start --head", 60)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        head.wait(timeout=60)
        deadline = time.monotonic() + 30
        while ray_processes_of(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_a_cluster_that_wants_a_token_refuses_the_driver_at_once_in_one_line(tmp_path, token_cluster):
    """Ray itself retries for about 20 s and then names no cause; the driver gives up as soon as
    Ray's log says the token was refused, well inside --connect-timeout."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store")))
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}  # a test Ray sets it
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--address", token_cluster,
         "--connect-timeout", "60"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**env, "HOME": str(tmp_path / "driver-home"), "LAYERSWAP_LOG_DIR": str(tmp_path / "logs")},
    )
    assert result.returncode == 2
    line = assert_one_line(result.stderr, f"cluster: the Ray at {token_cluster} refused this driver")
    assert "RAY_AUTH_MODE=token" in line and "--address auto" in line
    assert time.monotonic() - started < 30  # not the 60 s allowed
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


