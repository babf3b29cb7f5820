"""Two real drivers writing into one store at once (local path and moto S3), through the real CLI on
one Ray cluster: each network is trained once and each key measured once.

The second driver starts once the first holds its claims, so the two overlap for certain.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import yaml
from ray.cluster_utils import Cluster

from orchestrator.catalog.verify import verify_store
from tests.helpers import BUCKET, s3_uri, tiny_raw_config
from trainables.plan import row_key
from trainables.store import Store, layout
from trainables.store.schemas import SWAPS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_address():
    """A Ray cluster of one node with 2 CPUs that both drivers join (as on a shared cluster)."""
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2, "num_gpus": 0})
    yield cluster.address
    cluster.shutdown()


def config(path: Path, name: str, seeds: list[int], swaps: list[str]) -> Path:
    path.write_text(yaml.safe_dump(tiny_raw_config(
        path.parent / "unused", name=name, widths=[[8]], seeds=seeds, epochs=40, checkpoints=[0, 40],
        swaps=swaps, pack=1, resources={"cpu_per_trial": 0.5, "gpu_per_trial": 0},
    )))
    return path


def layerswap(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def holds_claims(store: Store) -> bool:
    return any(path.count("/") == 1 for path in store.list_files(layout.CLAIMS_DIR))


def run_overlapping(store: Store, first: list[str], second: list[str]) -> tuple[str, str]:
    """Start ``first``, then ``second`` as soon as the first holds claims; both outputs."""
    one = layerswap(*first)
    deadline = time.monotonic() + 300
    while not holds_claims(store):
        assert one.poll() is None, one.communicate()
        assert time.monotonic() < deadline, "the first driver claimed nothing in 300 s"
        time.sleep(0.2)
    two = layerswap(*second)
    outputs = []
    for process in (one, two):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out[-3000:] + err[-3000:]
        assert "Traceback" not in out + err
        outputs.append(out)
    return outputs[0], outputs[1]


def trained(out: str) -> int:
    return int(re.search(r": (\d+) trained, ", out)[1])


def assert_each_key_once(store: Store) -> int:
    """Every swaps row a raw reader sees is a distinct key (no key stored twice); the rows."""
    files = [store.path(p) for p in store.list_files("index/swaps")]
    dataset = ds.dataset(files, schema=SWAPS_SCHEMA, format="parquet", filesystem=store.fs)
    rows = dataset.to_table().to_pylist()
    keys = Counter((row["trial_id"], *row_key(row)) for row in rows)
    assert [key for key, n in keys.items() if n > 1] == []
    return len(rows)


@pytest.fixture(scope="module")
def trained_twice_at_once(ray_address, tmp_path_factory) -> tuple[Path, str, str, Path]:
    """Sweeps of seeds 0-3 and 2-5 into one local store at once."""
    root = tmp_path_factory.mktemp("drivers")
    store = Store.open(str(root / "store"))
    a = config(root / "a.yaml", "a", [0, 1, 2, 3], ["reinit"])
    b = config(root / "b.yaml", "b", [2, 3, 4, 5], ["reinit"])
    common = ["--store", str(root / "store"), "--address", ray_address, "--no-report"]
    out_a, out_b = run_overlapping(store, ["sweep", str(a), *common], ["sweep", str(b), *common])
    return root, out_a, out_b, b


def test_two_sweeps_at_once_train_each_network_once(trained_twice_at_once):
    root, out_a, out_b, _ = trained_twice_at_once
    assert trained(out_a) + trained(out_b) == 6, out_a + out_b  # 6 networks, 8 without claims
    assert "2 network(s) are held by another driver (" in out_b, out_b
    assert ", 2 trained by another driver, " in out_b, out_b
    store = Store.open(str(root / "store"))
    ids = store.read_index("trials").column("trial_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6
    assert assert_each_key_once(store) == 6 * (2 + 2)  # per network: none@0,40, reinit@0 of fc1 and fc2
    assert verify_store(store).problems == []
    assert store.list_files(layout.CLAIMS_DIR) == []  # both released everything
    experiments = [p.name for p in (root / "store" / "tune").iterdir()]
    assert len(experiments) == len(set(experiments)) >= 2  # each driver its own Tune experiment


def test_a_sweep_and_an_analyze_at_once_measure_each_key_once(ray_address, trained_twice_at_once, tmp_path):
    root, _, _, b = trained_twice_at_once
    shutil.copytree(root / "store", tmp_path / "store")
    store = Store.open(str(tmp_path / "store"))
    before = assert_each_key_once(store)
    grown = config(tmp_path / "b.yaml", "b", [2, 3, 4, 5], ["reinit", "transplant"])
    common = ["--address", ray_address]
    out_sweep, out_analyze = run_overlapping(
        store, ["sweep", str(grown), "--store", str(tmp_path / "store"), "--no-report", *common],
        ["analyze", str(tmp_path / "store"), "--swaps", "transplant,rerandomize", *common],
    )
    assert "network(s) are held by another driver (" in out_analyze, out_analyze
    # transplant of fc1 and fc2 for all 6 networks, rerandomize (1 draw) of both for all 6: once each
    assert assert_each_key_once(store) == before + 6 * 2 + 6 * 2
    assert verify_store(store).problems == []


def test_two_sweeps_at_once_on_s3(ray_address, s3_endpoint, tmp_path):  # noqa: F811
    uri = s3_uri(s3_endpoint, f"drivers/{tmp_path.name}").replace("s3://", "s3://testing:testing@")
    store = Store.open(uri)
    a = config(tmp_path / "a.yaml", "a", [0, 1, 2], ["reinit"])
    b = config(tmp_path / "b.yaml", "b", [1, 2, 3], ["reinit"])
    common = ["--store", uri, "--address", ray_address, "--no-report"]
    out_a, out_b = run_overlapping(store, ["sweep", str(a), *common], ["sweep", str(b), *common])
    assert "offers no atomic create" not in out_a + out_b  # conditional PUTs through boto3
    assert trained(out_a) + trained(out_b) == 4, out_a + out_b
    ids = store.read_index("trials").column("trial_id").to_pylist()
    assert len(ids) == len(set(ids)) == 4
    assert assert_each_key_once(store) == 4 * (2 + 2)
    assert verify_store(store).problems == []
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", access_key="testing",
                           secret_key="testing")
    folder = f"{BUCKET}/drivers/{tmp_path.name}/claims"
    claims = pafs.FileSelector(folder, allow_not_found=True, recursive=True)
    left = fs.get_file_info(claims)
    assert [info.path for info in left if info.type == pafs.FileType.File] == []
