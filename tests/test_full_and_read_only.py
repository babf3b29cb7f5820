"""A full disk and a read-only filesystem, for real: a small tmpfs mounted here (the tests run as root,
for whom chmod stops no write), filled up or remounted read-only. Every command ends with one line
naming the path and "no space left on device" or "read-only file system", exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.store import Store
from trainables.worker.pack_job import Placement, run_network

ROOT = Path(__file__).resolve().parent.parent
FULL = "no space left on device"
READ_ONLY = "read-only file system"


@pytest.fixture
def disk(tmp_path) -> Path:
    """A 1 MiB tmpfs of its own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` but for about ``leave`` bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as out:
        try:
            out.write(b"\0" * max(0, free - leave))
            out.flush()
        except OSError:
            pass  # full


def read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def trained_store(root: Path) -> Path:
    """A store of one complete network (checkpoints 0 and 2), written without Ray."""
    config = parse_config(tiny_raw_config(root, widths=[[8]], seeds=1, epochs=2, checkpoints=[0, 2],
                                          swaps=["reinit"]))
    store = Store.open(str(root))
    store.require_writable_version("sweep")
    (spec,) = expand_grid(config)
    run_network(spec, config.plan, load_dataset("synthetic").tensors("cpu"), store, config.name,
                Placement.here(torch.device("cpu")))
    return root


def the_line(err: str, path: Path, cause: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"layerswap: error: store: cannot write {path}"), err
    assert f": {cause}; " in lines[0], err
    return lines[0]


def test_a_sweep_into_a_full_disk_is_one_line(disk, tmp_path):
    fill(disk, leave=48 * 1024)  # the probe, the marker and the sweep record fit; the networks do not
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(disk / "store", widths=[[512]], epochs=2,
                                                     checkpoints=[0, 2], swaps=["reinit"])))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config)], capture_output=True, text=True,
        cwd=ROOT, timeout=600, env={**os.environ, "LAYERSWAP_LOG_DIR": str(tmp_path / "logs")},
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    the_line(result.stderr, disk / "store", FULL)
    assert "Traceback" not in result.stdout + result.stderr and "Errno" not in result.stdout + result.stderr


def test_the_probe_says_the_disk_is_full_and_leaves_nothing(disk, tmp_path, capsys):
    fill(disk)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(disk / "new" / "store")))
    assert main(["sweep", str(config)]) == 2
    the_line(capsys.readouterr().err, disk / "new" / "store", FULL)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no _probe-….tmp, no folder


@pytest.mark.parametrize("command", ["report", "analyze"])
def test_report_and_analyze_on_a_full_disk_are_one_line(local_ray, disk, capsys, command):
    store = trained_store(disk / "store")
    fill(disk)
    argv = [command, str(store)] + (["--swaps", "interpolate"] if command == "analyze" else [])
    assert main(argv) == 2
    the_line(capsys.readouterr().err, store, FULL)


def test_report_out_and_sweep_on_a_read_only_filesystem_are_one_line(disk, tmp_path, capsys):
    store = trained_store(tmp_path / "store")
    (disk / "reports").mkdir()
    read_only(disk)
    assert main(["report", str(store), "--out", str(disk / "reports" / "paper")]) == 2
    the_line(capsys.readouterr().err, disk / "reports" / "paper", READ_ONLY)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(disk / "reports" / "store")))
    assert main(["sweep", str(config)]) == 2
    the_line(capsys.readouterr().err, disk / "reports" / "store", READ_ONLY)
