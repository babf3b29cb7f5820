"""A sweep joined to a two-node Ray cluster (head + worker on 127.0.0.1) spreads its trials."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from ray.cluster_utils import Cluster

from tests.helpers import tiny_raw_config
from trainables.store import Store


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def sweep_cli(config, address: str, *extra: str) -> subprocess.CompletedProcess:
    """The CLI run from the config's folder, so a relative store path is relative to it."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--address", address,
         "--no-report", *extra],
        capture_output=True, text=True, timeout=300, cwd=config.parent,
    )


def test_trials_run_on_both_nodes(two_nodes, tmp_path):
    config = tmp_path / "config.yaml"
    # enough work (6 networks of 300 epochs, a few seconds each) that the second node's worker has
    # started before the first node's trial could take every pack from the board
    raw = tiny_raw_config("store", widths=[[16, 8]], seeds=6, epochs=300, checkpoints=[0, 300], pack=1,
                          swaps=["reinit"], resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config.write_text(yaml.safe_dump(raw))
    result = sweep_cli(config, two_nodes.address, "--shared-fs")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = Store.open(str(tmp_path / "store")).read_index("trials")
    assert trials.num_rows == 6
    node_ids = set(trials["node_id"].to_pylist())
    cluster_nodes = {node.node_id for node in two_nodes.list_all_nodes()}
    assert node_ids == cluster_nodes and len(node_ids) == 2


def test_local_store_on_a_multi_node_cluster_needs_shared_fs(two_nodes, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store", seeds=1)))
    result = sweep_cli(config, two_nodes.address)
    assert result.returncode == 2
    assert "is a local path but the Ray cluster has 2 nodes" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
