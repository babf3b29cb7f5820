"""Injected failures: a trial's worker dies mid-training; the sweep's driver is SIGKILLed."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
import safetensors.torch
import torch
import yaml

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.store import Store, layout
from trainables.store.schemas import TRIALS_SCHEMA, WEIGHTS_SCHEMA
from trainables.train.network import train_network
from trainables.train.pack import train_pack

CONV_RECIPE = {
    "dataset": "synthetic-images", "model": "cnn", "widths": [[4, 8]], "augment": "flip-crop",
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
}
"""A conv net with BatchNorm, augmentation and a schedule: their state must resume too."""


@pytest.mark.parametrize(
    ("seeds", "checkpoint_seconds", "resumed_from", "recipe"),
    [([5], 60.0, 2, {}), ([5, 6], 0.0, 3, {}), ([5], 0.0, 3, CONV_RECIPE), ([5, 6], 0.0, 3, CONV_RECIPE)],
    ids=["one network, checkpoint at checkpoint epochs", "pack of two, checkpoint every epoch",
         "conv net with augmentation and a schedule", "pack of two such conv nets"],
)
def test_a_killed_trial_resumes_from_its_last_checkpoint_with_identical_weights(
    local_ray, one_thread, tmp_path, monkeypatch, seeds, checkpoint_seconds, resumed_from, recipe
):
    """Killed after epoch 3: with checkpoints every 60 s only epoch 2 (a checkpoint epoch) was saved.

    The uninterrupted run uses one thread, as the trial did (a conv's reductions depend on it)."""
    marker = tmp_path / "killed"
    monkeypatch.setenv("LAYERSWAP_TEST_CRASH_AT_EPOCH", "3")
    monkeypatch.setenv("LAYERSWAP_TEST_CRASH_MARKER", str(marker))
    raw = tiny_raw_config(tmp_path / "store", **{
        "widths": [[16, 8]], "seeds": seeds, "epochs": 5, "pack": len(seeds), "checkpoints": [0, 2, 5],
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "checkpoint_seconds": checkpoint_seconds,
        **recipe,
    })
    config = parse_config(raw)
    lines: list[str] = []
    outcome = run_sweep(config, log=lines.append)
    assert (outcome.completed, outcome.failed) == (len(seeds), 0)
    assert marker.read_text() == "killed at epoch 3\n"
    lost = [line for line in lines if "worker lost on " in line]
    assert len(lost) == 1 and lost[0].endswith(f"; retrying {expand_grid(config)[0].trial_id}"), lines
    assert not any("Traceback" in line or "ActorDiedError" in line for line in lines), lines

    store = Store.open(str(tmp_path / "store"))
    rows = store.read_index("trials").to_pylist()
    assert [row["resumed_from_epoch"] for row in rows] == [resumed_from] * len(seeds)

    specs = expand_grid(config)
    data = load_dataset(config.dataset).tensors("cpu")
    if len(specs) == 1:
        uninterrupted = [train_network(specs[0], data, torch.device("cpu"))]
    else:
        uninterrupted = train_pack(specs, data, torch.device("cpu"))
    for spec, network in zip(specs, uninterrupted, strict=True):
        for epoch in spec.checkpoints:
            stored = safetensors.torch.load(store.read_bytes(layout.weights_path(spec.trial_id, epoch)))
            expected = network.checkpoints[epoch]
            assert stored.keys() == expected.keys()
            for key in stored:
                assert torch.equal(stored[key], expected[key]), (spec.seed, epoch, key)


def test_a_pack_that_raises_is_retried_in_place_and_its_networks_are_recorded_once(
    local_ray, tmp_path, monkeypatch
):
    marker = tmp_path / "raised"
    monkeypatch.setenv("LAYERSWAP_TEST_CRASH_AT_EPOCH", "2")
    monkeypatch.setenv("LAYERSWAP_TEST_CRASH_MARKER", str(marker))
    monkeypatch.setenv("LAYERSWAP_TEST_CRASH_RAISE", "1")
    raw = tiny_raw_config(tmp_path / "store", widths=[[16, 8]], seeds=[5, 6], epochs=3, pack=2,
                          checkpoints=[0, 3])
    lines: list[str] = []
    outcome = run_sweep(parse_config(raw), log=lines.append)
    assert (outcome.completed, outcome.failed) == (2, 0)
    assert marker.read_text() == "raised at epoch 2\n"
    assert not any("retrying" in line or "FAILED" in line for line in lines), lines  # no Tune retry
    # the last line counts the pack done and its trial no longer running
    assert "] done 2/2, running 0, pending 0, failed 0 | " in lines[-1], lines
    assert lines[-1].endswith("(mean of 2 networks)"), lines
    store = Store.open(str(tmp_path / "store"))
    rows = store.read_index("trials").to_pylist()
    assert sorted(row["seed"] for row in rows) == [5, 6]
    assert [row["resumed_from_epoch"] for row in rows] == [None, None]  # trained afresh
    specs = expand_grid(parse_config(raw))
    data = load_dataset("synthetic").tensors("cpu")
    for spec, network in zip(specs, train_pack(specs, data, torch.device("cpu")), strict=True):
        stored = safetensors.torch.load(store.read_bytes(layout.weights_path(spec.trial_id, 3)))
        assert all(torch.equal(stored[key], network.checkpoints[3][key]) for key in stored)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_driver_and_a_rerun_finish_the_sweep_without_duplicates(tmp_path):
    store_path = tmp_path / "store"
    config = tmp_path / "config.yaml"
    raw = tiny_raw_config(store_path, widths=[[64, 32]], seeds=6, epochs=6, checkpoints=[0, 3, 6], pack=1,
                          resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--no-report"]
    # The rerun runs on the machine where the driver died: it sees the driver's process is gone and
    # takes its claims over at once (trainables/store/claims.py), without waiting out its lease.
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials_dir = store_path / "index" / "trials"
    try:
        started = wait_for(lambda: trials_dir.exists() and any(trials_dir.glob("[!_]*.parquet")), 240)
        assert started, "no trial finished before the timeout"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finished_before = {p.stem for p in trials_dir.glob("[!_]*.parquet")}
    assert 1 <= len(finished_before) < 6
    stamps = {tid: (trials_dir / f"{tid}.parquet").stat().st_mtime_ns for tid in finished_before}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # the killed driver's workers may finish one more trial before Ray notices the driver is gone
    skipped = int(re.search(r"(\d+) skipped \(already trained\)", rerun.stdout)[1])
    assert len(finished_before) <= skipped < 6, rerun.stdout

    trials = ds.dataset(trials_dir, schema=TRIALS_SCHEMA, format="parquet").to_table()
    ids = trials["trial_id"].to_pylist()
    expected = {spec.trial_id for spec in expand_grid(parse_config(raw))}
    assert sorted(ids) == sorted(expected)  # every trial exactly once
    assert {tid: (trials_dir / f"{tid}.parquet").stat().st_mtime_ns for tid in finished_before} == stamps
    weights = ds.dataset(store_path / "index" / "weights", schema=WEIGHTS_SCHEMA,
                         format="parquet").to_table().to_pylist()
    assert len(weights) == 6 * 3 * 6  # trials × checkpoints × tensors (3 layers), no duplicates
    for row in weights:
        tensor = safetensors.torch.load_file(store_path / row["path"])[row["tensor"]]
        assert hashlib.sha256(tensor.numpy().tobytes()).hexdigest() == row["sha256"]


def test_a_killed_worker_is_one_line_and_the_sweep_stays_parallel(tmp_path):
    """Two trial slots, four networks; the first trial's worker is killed after epoch 3. The terminal
    gets one line for it, the traceback goes to the log file, and after the retry two networks train
    at once again (before, Tune's actor reuse left one slot dead for the rest of the sweep): the
    retried network and the two not yet begun keep both slots busy."""
    store = tmp_path / "store"
    config = tmp_path / "config.yaml"
    # 1,000 epochs (about 5 s a network here): long enough that the networks after the retry outlast
    # the new worker's start, so that two of them can be seen training at once
    raw = tiny_raw_config(store, widths=[[16]], seeds=4, epochs=1000, checkpoints=[0, 1000], pack=1,
                          swaps=["reinit"], resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config.write_text(yaml.safe_dump(raw))
    marker, logs = tmp_path / "killed", tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--no-report"],
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "LAYERSWAP_TEST_CRASH_AT_EPOCH": "3", "LAYERSWAP_LOG_DIR": str(logs),
             "LAYERSWAP_TEST_CRASH_MARKER": str(marker), "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == ""
    lost = [line for line in result.stdout.splitlines() if "worker lost on " in line]
    assert len(lost) == 1, result.stdout
    assert re.search(r"\| worker lost on \S+; retrying [0-9a-f]{16}$", lost[0]), lost
    for noise in ("Traceback", "ActorDiedError", "(raylet)", "A worker died"):
        assert noise not in result.stdout, result.stdout
    (log,) = logs.glob("tune-*.log")
    assert "ActorDiedError" in log.read_text() and str(log) in result.stdout

    killed_at = marker.stat().st_mtime
    rows = Store.open(str(store)).read_index("trials").to_pylist()
    assert len(rows) == 4
    spans = sorted(
        (row["finished_at"].timestamp() - row["train_seconds"] - row["swap_seconds"],
         row["finished_at"].timestamp())
        for row in rows
    )
    after = [(start, end) for start, end in spans if start > killed_at]
    overlapping = [(a, b) for a, b in itertools.pairwise(after) if b[0] < a[1] - 1.0]
    assert overlapping, (killed_at, spans)  # two networks trained at once after the retry
