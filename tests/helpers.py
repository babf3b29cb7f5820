"""Helpers shared by the tests (imported as ``from tests.helpers import ...``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from orchestrator import cli
from trainables.store import Store
from trainables.store.schemas import SWAPS_SCHEMA, TRIALS_SCHEMA


def lr_grid(store: Path, lrs, **overrides) -> dict:
    """The tiny config with a learning-rate axis (its optimizer block names no lr)."""
    axis = {"optimizer": {"name": "sgd"}, "grid": {"optimizer.lr": list(lrs)}}
    return tiny_raw_config(store, **{**axis, **overrides})


GRID_SWEEP = {"epochs": 2, "checkpoints": [0, 2], "swaps": ["reinit", "rerandomize"], "pack": "auto"}
"""With ``lr_grid(store, [0.1, 0.05], **GRID_SWEEP)``: the grid sweep of the fixture ``grid_sweep``."""


def tiny_raw_config(store: Path, **overrides) -> dict:
    raw = {
        "name": "tiny",
        "dataset": "synthetic",
        "model": "mlp",
        "widths": [[16, 8], [12]],
        "seeds": 2,
        "epochs": 3,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "checkpoints": [0, 1, 3],
        "swaps": ["reinit", "rerandomize", "transplant"],
        # CPU trials: a trial given a GPU share fails where torch sees no CUDA device, and on a
        # GPU machine weights trained on the GPU would not match the CPU ones the tests compute.
        "resources": {"cpu_per_trial": 0.5, "gpu_per_trial": 0},
        "store": str(store),
    }
    raw.update(overrides)
    return raw


def ray_processes_of(pid: int) -> list[str]:
    """Command lines of live processes of a Ray session started by process ``pid`` (Ray names
    its session directory ``session_<date>_<time>_<pid>``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"_{pid}/" in cmdline or f"_{pid} " in cmdline:
            if "session_" in cmdline:
                found.append(cmdline)
    return found


# --- stores written by hand (no training): trials and swap rows with known values ----------

Swap = tuple[str, str | None, int | None, float]
"""(kind, layer, epoch, test_acc); rerandomize rows get draw numbers in order."""


def trial_table(
    trial_id: str,
    *,
    sweep: str = "demo",
    widths: Sequence[int] = (8, 4),
    seed: int = 0,
    trained: float = 0.9,
    epochs: int = 2,
    n_classes: int = 10,
    config_id: str | None = None,
    spec_json: str | None = None,
) -> pa.Table:
    """A trial row; its ``config_id`` defaults to one per (sweep's) widths."""
    row: dict = {field.name: None for field in TRIALS_SCHEMA}
    row.update(
        trial_id=trial_id,
        sweep=sweep,
        config_id=config_id or "cfg-" + "-".join(map(str, widths)),
        spec_json=spec_json,
        dataset="synthetic",
        model="mlp",
        widths=list(widths),
        seed=seed,
        epochs=epochs,
        checkpoints=sorted({0, 1, epochs}),
        test_acc=trained,
        init_test_acc=0.1,
        n_classes=n_classes,
        hostname=f"node-{seed % 2}",
        finished_at=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    return pa.Table.from_pylist([row], schema=TRIALS_SCHEMA)


def swaps_table(trial_id: str, swaps: Sequence[Swap]) -> pa.Table:
    rows, draws = [], {}
    for kind, layer, epoch, acc in swaps:
        draw = None
        if kind == "rerandomize":
            draw = draws[layer] = draws.get(layer, -1) + 1
        rows.append(
            dict(trial_id=trial_id, kind=kind, layer=layer, epoch=epoch, draw=draw, test_acc=acc)
        )
    return pa.Table.from_pylist(rows, schema=SWAPS_SCHEMA)


def write_trial(store: Store, trial_id: str, swaps: Sequence[Swap], finished: bool = True, **kw):
    """Write a trial's swap rows and, if ``finished``, its trial row (written last)."""
    store.write_index("swaps", trial_id, swaps_table(trial_id, swaps))
    if finished:
        store.write_index("trials", trial_id, trial_table(trial_id, **kw))


def standard_swaps(
    trained: float,
    reinit0: Sequence[float],
    *,
    epochs: int = 2,
    other: float | None = None,
    rerandomize: Sequence[float] = (),
    transplant: Sequence[float] | None = None,
) -> list[Swap]:
    """A full swap table: none at 0, 1, epochs; per layer reinit at 0 and 1, draws, transplant."""
    other = trained - 0.01 if other is None else other
    rows: list[Swap] = [
        ("none", None, 0, 0.1),
        ("none", None, 1, 0.8),
        ("none", None, epochs, trained),
    ]
    for i, acc in enumerate(reinit0):
        layer = f"fc{i + 1}"
        rows += [("reinit", layer, 0, acc), ("reinit", layer, 1, other)]
        rows += [("rerandomize", layer, None, a) for a in rerandomize]
        t_acc = 0.1 + 0.1 * i if transplant is None else transplant[i]
        rows.append(("transplant", layer, epochs, t_acc))
    return rows


def spec_json_with(lr: float, seed: int) -> str:
    spec = {"dataset": "synthetic", "model": "mlp", "widths": [8, 4], "seed": seed, "epochs": 2,
            "optimizer": {"name": "sgd", "lr": lr}}
    return json.dumps(spec)


def build_partial_store(root: Path) -> Store:
    """Sweep "demo": widths (8, 4) x seeds 0-2 complete, widths (6,) seed 0 complete,
    seed 1 unfinished (swap rows, no trial row), seed 2 never started."""
    store = Store.open(str(root))
    for seed, trained in enumerate([0.90, 0.92, 0.94]):
        swaps = standard_swaps(
            trained, [0.5 + 0.05 * seed, trained - 0.01, trained], rerandomize=[0.3]
        )
        write_trial(store, f"wide{seed}", swaps, seed=seed, trained=trained)
    write_trial(store, "narrow0", standard_swaps(0.85, [0.6, 0.84]), widths=(6,), trained=0.85)
    write_trial(store, "narrow1", standard_swaps(0.85, [0.6, 0.84]), widths=(6,), finished=False)
    expected = ["wide0", "wide1", "wide2", "narrow0", "narrow1", "narrow2"]
    record = {"sweep": "demo", "config": {"name": "demo"}, "trial_ids": expected}
    store.write_bytes("sweeps/demo/0123abcd.json", json.dumps(record).encode())
    return store


# --- refusals through the CLI: one line, the store untouched --------------------------------

def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its bytes ("dir" for directories)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
    }


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


def trained_store(root: Path, **overrides) -> list:
    """The tiny config's networks (widths [8], reinit only, then ``overrides``) trained and written
    into a store at ``root`` without Ray; their specs."""
    import torch

    from orchestrator.config.grid import expand_grid
    from orchestrator.config.sweep_config import parse_config
    from trainables.data.datasets import load_dataset
    from trainables.worker.pack_job import Placement, run_network

    config = parse_config(tiny_raw_config(root, **{"widths": [[8]], "swaps": ["reinit"], **overrides}))
    store = Store.open(str(root))
    store.require_writable_version("sweep")
    data = load_dataset("synthetic").tensors("cpu")
    specs = expand_grid(config)
    for spec in specs:
        run_network(spec, config.plan, data, store, config.name, Placement.here(torch.device("cpu")))
    return specs


def one_trial_store(root: Path) -> str:
    """A store at ``root`` of one complete tiny trial, written without Ray; its trial id."""
    (spec,) = trained_store(root, seeds=1, epochs=1, checkpoints=[0, 1])
    return spec.trial_id


# --- a moto S3 server (the fixture s3_endpoint is in conftest.py) --------------------------

BUCKET = "layerswap-test"


CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(port: int, server: subprocess.Popen, name: str, timeout_s: float) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``; fail when the ``server``
    process exits first or ``timeout_s`` seconds pass."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert server.poll() is None, f"{name} exited"
            assert time.monotonic() < deadline, f"{name} did not start in {timeout_s:g} s"
            time.sleep(0.2)


def s3_uri(endpoint: str, prefix: str, **options: str) -> str:
    options = {"endpoint_override": endpoint, "scheme": "http", **options}
    query = "&".join(f"{name}={value}" for name, value in options.items())
    return f"s3://{BUCKET}/{prefix}?{query}"
