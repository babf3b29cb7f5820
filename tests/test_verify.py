"""`layerswap verify`; then, on a Ray cluster of two nodes: two sweeps writing into one store at
once, and preflight probing the store from each node."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ray.cluster_utils import Cluster

from orchestrator.catalog.contents import load_contents
from orchestrator.catalog.verify import verify_store
from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.store import Store, layout
from trainables.store.schemas import TABLE_SCHEMAS
from trainables.worker.pack_job import Placement, run_network


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory) -> tuple[Path, list[str]]:
    """A store of two complete trials (checkpoints 0, 1, 2), written without Ray."""
    root = tmp_path_factory.mktemp("verify") / "store"
    config = parse_config(
        tiny_raw_config(root, widths=[[12]], epochs=2, checkpoints=[0, 1, 2], swaps=["reinit"])
    )
    store = Store.open(str(root))
    data = load_dataset("synthetic").tensors("cpu")
    specs = expand_grid(config)
    for spec in specs:
        run_network(spec, config.plan, data, store, config.name, Placement.here(torch.device("cpu")))
    return root, sorted(spec.trial_id for spec in specs)


@pytest.fixture
def store_copy(pristine_store, tmp_path) -> tuple[Path, list[str]]:
    root, trial_ids = pristine_store
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", trial_ids


def test_an_intact_store_verifies(store_copy, capsys):
    root, trial_ids = store_copy
    result = verify_store(Store.open(str(root)))
    assert (result.trials, result.files, result.problems) == (2, 2 * (1 + 3), [])
    assert main(["verify", str(root)]) == 0
    assert capsys.readouterr().out == "ok: 2 trials, 8 files verified\n"


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_each_damaged_file_is_named_with_its_trial(store_copy, capsys):
    root, (first, second) = store_copy
    flip_last_byte(root / layout.weights_path(first, 2))
    (root / layout.spec_path(first)).write_bytes(b'{"seed":99}')
    (root / layout.weights_path(second, 0)).unlink()
    truncated = root / layout.weights_path(second, 1)
    truncated.write_bytes(truncated.read_bytes()[:40])

    problems = verify_store(Store.open(str(root))).problems
    found = Counter((p.trial_id, p.path) for p in problems)
    assert found == {
        (first, layout.weights_path(first, 2)): 1,
        # its hash is not the trial id, and it is not the row's spec_json
        (first, layout.spec_path(first)): 2,
        (second, layout.weights_path(second, 0)): 1,
        (second, layout.weights_path(second, 1)): 1,
    }
    messages = {p.path: p.message for p in problems}
    assert re.fullmatch(r"tensor 'fc\d\.(weight|bias)': sha256 is \w+…, index/weights says \w+…",
                        messages[layout.weights_path(first, 2)])
    assert messages[layout.weights_path(second, 0)].startswith("missing")
    assert messages[layout.weights_path(second, 1)].startswith("not a readable safetensors file")

    assert main(["verify", str(root)]) == 2  # problems found; 1 is for bugs
    captured = capsys.readouterr()
    assert f"{layout.weights_path(first, 2)} (trial {first}): tensor 'fc" in captured.out
    assert f"{layout.weights_path(second, 0)} (trial {second}): missing" in captured.out
    assert "5 problem(s) in 2 of 2 trials" in captured.err


def test_missing_index_rows_and_files_are_reported(store_copy):
    root, (first, second) = store_copy
    (root / "index" / "swaps" / f"{first}.parquet").unlink()
    (root / "index" / "weights" / f"{second}.parquet").unlink()
    problems = {(p.trial_id, p.path, p.message) for p in verify_store(Store.open(str(root))).problems}
    assert problems == {
        (first, f"index/swaps/{first}.parquet", "missing"),
        *((second, layout.weights_path(second, e), "checkpoint has no rows in index/weights")
          for e in (0, 1, 2)),
    }


def test_a_key_measured_twice_is_named_and_read_once(store_copy):
    """Two concurrent writers can store one key twice: verify names it, readers keep one row."""
    root, (first, _) = store_copy
    store = Store.open(str(root))
    rows = pq.read_table(root / "index" / "swaps" / f"{first}.parquet").slice(0, 2)
    store.write_table(f"index/swaps/{first}-0badcafe.parquet", "swaps", rows)
    problems = verify_store(store).problems
    assert [(p.trial_id, p.path) for p in problems] == [(first, f"index/swaps/{first}.parquet")] * 2
    files = f"index/swaps/{first}.parquet and index/swaps/{first}-0badcafe.parquet"
    expected = rf"key \('(none|reinit)', .*\) is measured 2 times, in {files}; --repair keeps one"
    assert all(re.fullmatch(expected, p.message) for p in problems), problems
    contents = load_contents(store)
    assert contents.swaps.num_rows == store.read_index("swaps").num_rows - 2



def test_movement_and_criticality_rows_stored_twice_are_named(store_copy):
    root, (first, second) = store_copy
    store = Store.open(str(root))
    row = {
        "trial_id": second, "layer": "fc1", "criticality": 1.5e6, "alpha_star": 0.5, "sigma_star": 0.01,
        "loss_at_star": 0.3, "trained_loss": 0.29, "n_alpha": 11, "n_sigma": 11, "sigma_max": 0.01,
        "noise_samples": 2, "rtol": 1.05, "subset_size": 256, "noise_seed": 7, "sq_dist": 4.0,
        "pairs_evaluated": 30, "seconds": 0.5,
    }
    table = pa.Table.from_pylist([row], schema=TABLE_SCHEMAS["criticality"])
    store.write_table(f"index/criticality/{second}-00000001.parquet", "criticality", table)
    assert verify_store(store).problems == []  # one criticality row is no problem
    store.write_table(f"index/criticality/{second}-00000002.parquet", "criticality", table)
    movement = root / "index" / "layers" / f"{first}.parquet"
    layers = pq.read_table(movement)
    assert layers.num_rows > 0  # movement is written with every network
    pq.write_table(pa.concat_tables([layers, layers.slice(0, 1)]), movement)
    problems = {(p.trial_id, p.path, p.message) for p in verify_store(store).problems}
    epoch, layer = layers.column("epoch")[0].as_py(), layers.column("layer")[0].as_py()
    assert problems == {
        (first, f"index/layers/{first}.parquet",
         f"key ({epoch}, {layer!r}) is measured 2 times, in index/layers/{first}.parquet (twice); "
         "--repair keeps one"),
        (second, f"index/criticality/{second}-00000001.parquet",
         "key ('fc1', 'grid', 11, 11, 0.01, None, None, None, 2, 1.05, 256) is measured 2 times, in "
         f"index/criticality/{second}-00000001.parquet and index/criticality/{second}-00000002.parquet; "
         "--repair keeps one"),
    }


# --- on a Ray cluster of two nodes on this machine ------------------------------------------------


@pytest.fixture(scope="module")
def two_node_ray():
    """The address of a Ray cluster of two nodes (1 CPU each); the tests join it from subprocesses."""
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "num_gpus": 0})
    cluster.add_node(num_cpus=1, num_gpus=0)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def layerswap(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def write_config(path: Path, **overrides) -> Path:
    raw = tiny_raw_config(
        path.parent / "unused", epochs=2, checkpoints=[0, 2], swaps=["reinit"],
        resources={"cpu_per_trial": 0.5, "gpu_per_trial": 0}, **overrides,
    )
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_sweeps_writing_into_one_store_at_once(two_node_ray, tmp_path):
    # grids of a and b share the trial (widths 12, seed 1): both may train it at the same time
    config_a = write_config(tmp_path / "a.yaml", name="a", widths=[[12]], seeds=[0, 1])
    config_b = write_config(tmp_path / "b.yaml", name="b", widths=[[12], [10]], seeds=[1])
    store = tmp_path / "store"
    sweeps = [
        layerswap("sweep", str(config), "--store", str(store), "--address", two_node_ray,
                  "--shared-fs", "--no-report")
        for config in (config_a, config_b)
    ]
    for process in sweeps:
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, out[-3000:] + err[-3000:]

    opened = Store.open(str(store))
    assert verify_store(opened).problems == []
    grids = {
        name: {spec.trial_id for spec in expand_grid(parse_config(yaml.safe_load(path.read_text())))}
        for name, path in (("a", config_a), ("b", config_b))
    }
    assert len(grids["a"] | grids["b"]) == 3
    trial_ids = opened.read_index("trials").column("trial_id").to_pylist()
    assert sorted(trial_ids) == sorted(grids["a"] | grids["b"])  # each trial row exactly once
    swaps = opened.read_index("swaps").to_pylist()
    keys = Counter((r["trial_id"], r["kind"], r["layer"], r["epoch"], r["draw"]) for r in swaps)
    assert set(keys.values()) == {1} and len(swaps) == 3 * (2 + 2)  # none@0,2 + reinit@0 x 2 layers
    statuses = {s.sweep: (s.complete, s.expected) for s in load_contents(opened).sweeps}
    assert statuses == {"a": (2, 2), "b": (2, 2)}


def test_preflight_probes_the_store_from_each_node(two_node_ray, tmp_path):
    process = layerswap("preflight", "--address", two_node_ray, "--store", str(tmp_path / "store"))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    lines = out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("node "))) + 2:]
    rows = table[: table.index("")]
    assert len(rows) == 2 and all(row.endswith("  ok") for row in rows), out
    assert len({row.split()[1] for row in rows}) == 2  # two node ids
    assert "ok: 2 node(s) ready" in out
    assert not (tmp_path / "store" / "_preflight").exists()
