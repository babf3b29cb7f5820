"""Files written by a helper thread: in order, the trial row last, a failure kept and reported."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.store import Store
from trainables.worker.pack_job import Placement, run_networks
from trainables.worker.store_writer import StoreWriter
from trainables.worker.work_times import WorkTimes


def test_writes_run_in_order_in_another_thread_and_a_failure_skips_the_rest_of_its_network(tmp_path):
    store = Store.open(str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "blocked").write_text("a file where a directory is wanted")
    times = WorkTimes()
    writer = StoreWriter(store, times=times)
    threads: list[str] = []

    def write(name: str, target: Store) -> None:
        threads.append(threading.current_thread().name)
        target.write_bytes(name, name.encode())

    first, second = writer.network(), writer.network()
    writer.submit(first, partial(write, "a/one"))
    writer.submit(first, partial(write, "blocked/two"))  # fails: blocked is a file
    writer.submit(first, partial(write, "a/three"))  # skipped: the network's write before it failed
    writer.submit(second, partial(write, "b/one"))  # another network's writes go on
    with pytest.raises(OSError):
        writer.settle([first])
    writer.settle([second])
    writer.close()
    assert store.read_bytes("a/one") == b"a/one" and store.read_bytes("b/one") == b"b/one"
    assert not store.exists("a/three")
    assert threads and all(name.startswith("layerswap-writer") for name in threads)
    assert first.failed and not second.failed
    assert times.write > 0  # the waits of settle and close


def test_a_network_recorded_through_a_background_writer_is_complete_once_settled(tmp_path):
    config = parse_config(tiny_raw_config(tmp_path / "store", widths=[[8]], seeds=2, checkpoints=[0, 1, 3]))
    specs = expand_grid(config)
    store = Store.open(str(tmp_path / "store"))
    data = load_dataset("synthetic").tensors("cpu")
    times = WorkTimes()
    writer = StoreWriter(store, times=times)
    results = run_networks(specs, config.plan, data, store, "tiny", Placement.here(torch.device("cpu")),
                           writer=writer, times=times)
    writer.settle([result.written for result in results])
    writer.close()
    assert store.completed_trial_ids() == {spec.trial_id for spec in specs}
    rows = store.read_index("trials").to_pylist()
    assert all(row["write_seconds"] > 0 for row in rows)
    assert len(store.read_index("weights").to_pylist()) == 2 * 3 * 4  # networks x checkpoints x tensors
    assert times.train > 0 and times.measure > 0


def test_a_pack_whose_files_cannot_be_written_is_retried_then_failed_without_a_trial_row(local_ray, tmp_path):
    root = tmp_path / "store"
    (root / "index").mkdir(parents=True)
    (root / "layerswap.json").write_text('{"store_version": 2}')
    (root / "index" / "layers").write_text("a file where the layers index goes")
    raw = tiny_raw_config(root, widths=[[8]], seeds=[3], epochs=1, checkpoints=[0, 1], swaps=["reinit"])
    lines: list[str] = []
    outcome = run_sweep(parse_config(raw), log=lines.append)
    assert (outcome.completed, outcome.failed) == (0, 1)
    [failed] = [line for line in lines if "FAILED" in line]
    assert "] done 0/1, running 0, pending 0, failed 1 | " in failed and "(1 networks): " in failed
    store = Store.open(str(root))
    assert store.completed_trial_ids() == set()
    (spec,) = expand_grid(parse_config(raw))
    assert Path(root, "trials", spec.trial_id, "spec.json").exists()  # written before the failing table
