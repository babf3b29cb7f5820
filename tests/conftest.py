"""Shared fixtures: a real local Ray, one torch thread, a tiny sweep config, a second model family.

Helpers that tests import live in tests/helpers.py (no test imports this module).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from orchestrator.config.sweep_config import SweepConfig, parse_config
from tests.helpers import tiny_raw_config
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
