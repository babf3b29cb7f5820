"""Shared fixtures: a real local Ray, one torch thread, a tiny sweep config, a second model family.

Helpers that tests import live in tests/helpers.py (no test imports this module).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import ray
import torch

from orchestrator.config.sweep_config import SweepConfig, parse_config
from tests.helpers import (
    BUCKET,
    CREDENTIALS,
    GRID_SWEEP,
    free_port,
    lr_grid,
    one_trial_store,
    tiny_raw_config,
    wait_until_listening,
)
from trainables.models import registry


@pytest.fixture(scope="session")
def local_ray():
    """A real Ray on this machine: 2 CPUs and one declared GPU (a scheduling resource only)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def tinybn(monkeypatch):
    """The test family of tests/bn_family.py (a conv with a BatchNorm), as ``model: tinybn`` for a test."""
    monkeypatch.setitem(registry.FAMILIES, "tinybn", "tests.bn_family")
    return registry.family("tinybn")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one thread is fastest, and immune to other processes' load on the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config(tmp_path: Path) -> SweepConfig:
    return parse_config(tiny_raw_config(tmp_path / "store"))


@pytest.fixture(scope="session")
def pristine_store(tmp_path_factory) -> tuple[Path, str]:
    """A store of one complete trial, written without Ray: (root, trial id). Never changed: tests
    that change a store take :func:`store`, a copy."""
    root = tmp_path_factory.mktemp("pristine") / "store"
    return root, one_trial_store(root)


@pytest.fixture(scope="session")
def grid_sweep(local_ray, tmp_path_factory):
    """A real grid sweep on Ray, run once for tests/test_grid.py and tests/test_grid_report.py:
    ``optimizer.lr`` 0.1 and 0.05 x the tiny widths x 2 seeds, 2 epochs, reinit and rerandomize,
    automatic packs (:data:`tests.helpers.GRID_SWEEP`). (store root, its outcome, its log lines);
    never changed: a test that sweeps into it or reports copies it first."""
    from orchestrator.run.sweep import run_sweep

    root = tmp_path_factory.mktemp("grid") / "store"
    lines: list[str] = []
    outcome = run_sweep(parse_config(lr_grid(root, [0.1, 0.05], **GRID_SWEEP)), log=lines.append)
    return root, outcome, tuple(lines)


@pytest.fixture
def store(pristine_store, tmp_path) -> tuple[Path, str]:
    """A copy of :func:`pristine_store` of this test's own: (root, trial id)."""
    root, trial_id = pristine_store
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", trial_id


@pytest.fixture(scope="module")
def s3_endpoint():
    """host:port of a moto S3 server holding an empty bucket; AWS credentials set in the environment."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        try:
            wait_until_listening(port, server, "moto server", 30)
            endpoint = f"127.0.0.1:{port}"
            admin, _ = pafs.FileSystem.from_uri(
                f"s3://{BUCKET}?endpoint_override={endpoint}&scheme=http&allow_bucket_creation=true"
            )
            admin.create_dir(BUCKET)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=10)
