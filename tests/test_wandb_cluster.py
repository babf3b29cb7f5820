"""On a multi-node Ray cluster, offline W&B runs from other nodes end up in the store's wandb/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.cluster_utils import Cluster

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from tests.helpers import tiny_raw_config
from tests.wandb_records import WANDB_VARIABLES, offline_runs, read_run, wandb_sync_dry_run
from trainables.store import Store


@pytest.fixture(scope="module")
def cluster():
    """A head that runs no trial (0 CPUs, as in cluster.yaml) and one worker node."""
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=0)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_offline_runs_of_other_nodes_are_copied_into_the_store(cluster, tmp_path):
    raw = tiny_raw_config(tmp_path / "store", name="wandb-cluster", widths=[[12]], seeds=2, pack=1,
                          resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    environ = {key: value for key, value in os.environ.items() if key not in WANDB_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config_path), "--address", cluster.address,
         "--shared-fs", "--wandb", "layerswap-test"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**environ, "WANDB_MODE": "offline"},  # HOME stays: Ray's auth token is under ~/.ray
    )
    assert result.returncode == 0, result.stderr[-3000:]
    store = Store.open(str(tmp_path / "store"))
    head = cluster.head_node.node_id
    assert set(store.read_index("trials")["node_id"].to_pylist()) - {head}  # trained away from the driver
    for spec in expand_grid(parse_config(raw)):
        [folder] = (tmp_path / "store" / "wandb" / "wandb-cluster" / spec.trial_id).glob("offline-run-*")
        run = read_run(folder)
        assert (run.name, run.group, run.project) == (spec.trial_id, "wandb-cluster", "layerswap-test")
        assert [row["epoch"] for row in run.history if "train_loss" in row] == list(range(1, spec.epochs + 1))
        assert "reinit@0_drop/fc1" in run.summary
    # the driver's own folder holds the report run only
    assert [run.name for run in offline_runs(tmp_path / "wandb")] == ["wandb-cluster-report"]
    store_runs = tmp_path / "store" / "wandb" / "wandb-cluster"
    command = f"wandb sync {tmp_path / 'wandb'} {store_runs}/*"
    assert command in result.stdout
    trial_folders = [str(path) for path in sorted(Path(store_runs).iterdir())]
    assert "Would sync 3 run(s)" in wandb_sync_dry_run(str(tmp_path / "wandb"), *trial_folders)
