"""Diverged networks: a non-finite training loss ends that network's training, in a pack that network
only; its trial row says so, nothing is measured on it, ls and the report name it, statistics skip it.

On the synthetic data at lr 10 (SGD, widths [8], 3 epochs) seed 0 diverges in epoch 3 and seed 1
trains to the end, packed or not (found by trying; the training is deterministic on a CPU).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch
import torch
import yaml

from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.store import Store, layout
from trainables.train.network import train_network
from trainables.train.pack import train_pack


def raw(store: Path, **overrides) -> dict:
    return tiny_raw_config(store, widths=[[8]], seeds=[0, 1], epochs=3, checkpoints=[0, 1, 3],
                           optimizer={"name": "sgd", "lr": 10}, swaps=["reinit"], **overrides)


def test_in_a_pack_only_the_diverged_network_stops(one_thread, tmp_path):
    data = load_dataset("synthetic").tensors("cpu")
    specs = expand_grid(parse_config(raw(tmp_path / "unused")))
    packed = train_pack(specs, data, torch.device("cpu"))
    alone = [train_network(spec, data, torch.device("cpu")) for spec in specs]
    assert [network.diverged_epoch for network in packed] == [3, None]
    assert [network.diverged_epoch for network in alone] == [3, None]
    assert sorted(packed[0].checkpoints) == [0, 1]  # nothing saved from the epoch it diverged in
    assert sorted(packed[1].checkpoints) == [0, 1, 3]
    trained = packed[1].checkpoints[3]
    assert all(torch.isfinite(tensor).all() for tensor in trained.values())  # no NaN reached it
    # and it trained as it does alone: to float tolerance, grown with its weights (~1e14 at this lr)
    for key, tensor in trained.items():
        torch.testing.assert_close(tensor, alone[1].checkpoints[3][key], rtol=1e-3, atol=0)


@pytest.fixture(scope="module")
def diverged_sweep(local_ray, tmp_path_factory) -> tuple[Path, Path]:
    """The CLI's config of seeds 0 and 1 packed together at lr 10 (seed 0 diverges)."""
    root = tmp_path_factory.mktemp("diverged")
    config = root / "diverged.yaml"
    config.write_text(yaml.safe_dump(raw(root / "store", pack=2)))
    return root, config


def test_the_sweep_records_it_as_diverged_and_measures_nothing_on_it(diverged_sweep, capsys):
    root, config = diverged_sweep
    assert main(["sweep", str(config), "--no-report"]) == 0
    out = capsys.readouterr().out
    lost, kept = expand_grid(parse_config(yaml.safe_load(config.read_text())))
    assert re.search(rf"{lost.trial_id} \([^)]*\) test_acc [0-9.]+; 1 diverged", out), out
    store = Store.open(str(root / "store"))
    trials = store.read_index("trials").to_pandas().set_index("trial_id")
    diverged = trials[trials["status"] == "diverged"]
    assert list(diverged.index) == [lost.trial_id]
    assert diverged.loc[lost.trial_id, "diverged_epoch"] == 3
    assert pd.isna(diverged.loc[lost.trial_id, "test_acc"])
    assert 0 < diverged.loc[lost.trial_id, "init_test_acc"] < 1
    assert set(trials["status"]) == {"ok", "diverged"}
    swaps = store.read_index("swaps").to_pandas()
    assert set(swaps["trial_id"]) == {kept.trial_id}
    assert not (root / "store" / layout.weights_path(lost.trial_id, 3)).exists()
    epoch1 = safetensors.torch.load_file(root / "store" / layout.weights_path(lost.trial_id, 1))
    assert all(torch.isfinite(t).all() for t in epoch1.values())
    assert lost.trial_id not in store.index_trial_ids("layers")

    assert main(["verify", str(root / "store")]) == 0  # its checkpoints before epoch 3 are all it has
    assert main(["analyze", str(root / "store")]) == 0
    assert "analyze: 2 networks, 0 to measure" in capsys.readouterr().out  # nothing to measure on it


def test_ls_and_the_report_name_it_and_statistics_leave_it_out(diverged_sweep, capsys):
    root, config = diverged_sweep
    store = root / "store"
    lost_config = expand_grid(parse_config(yaml.safe_load(config.read_text())))[0].config_id
    assert main(["ls", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "diverged@3" in listing
    sentence = ("1 network(s) diverged (non-finite training loss; no swaps measured), left out of every "
                "statistic: tiny mlp, widths 8 · ")  # the configuration named as ls and the report name it
    assert sentence in listing and f"{lost_config[:8]} seed(s) 0 at epoch 3" in listing, listing
    assert main(["report", str(store), "--out", str(root / "report")]) == 0
    capsys.readouterr()
    assert sentence in (root / "report" / "report.md").read_text()
    stats = pd.read_parquet(root / "report" / "stats.parquet")
    assert set(stats["n"]) == {1}  # seed 1 only
