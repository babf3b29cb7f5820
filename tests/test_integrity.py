"""Integrity on read: weights files are checked against index/weights before anything is measured
from them, through the real CLI (``layerswap analyze``, the session's local Ray) and the loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from orchestrator.cli import main
from tests.helpers import trained_store
from trainables.errors import WeightsDamaged
from trainables.measure.stored import load_checkpoints
from trainables.spec import TrialSpec
from trainables.store import Store, layout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, list[TrialSpec]]:
    """Two trained networks (checkpoints 0-3), measured with reinit only, written without Ray."""
    root = tmp_path_factory.mktemp("integrity") / "store"
    specs = trained_store(root, epochs=3, checkpoints=[0, 1, 2, 3])
    return root, specs


@pytest.fixture
def damaged(pristine, tmp_path) -> tuple[Path, TrialSpec, TrialSpec]:
    """A copy: 100 bytes flipped in the first network's epoch-3 tensors, the second's epoch 1 deleted."""
    root, (first, second) = pristine
    shutil.copytree(root, tmp_path / "store")
    root = tmp_path / "store"
    path = root / layout.weights_path(first.trial_id, 3)
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 300, len(data) - 200):  # inside the tensor bytes, not the header
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    (root / layout.weights_path(second.trial_id, 1)).unlink()
    return root, first, second


def batch_files(root: Path, trial_id: str) -> list[str]:
    return sorted(p.name for p in (root / "index" / "swaps").glob(f"{trial_id}-*.parquet"))


def test_analyze_measures_nothing_from_damaged_weights_and_the_rest_goes_on(local_ray, damaged, capsys):
    root, first, second = damaged
    assert main(["analyze", str(root), "--swaps", "interpolate"]) == 2
    out, err = capsys.readouterr()
    damaged_file = layout.weights_path(first.trial_id, 3)
    line = next(line for line in out.splitlines() if f"{first.trial_id} FAILED" in line)
    assert f"FAILED: {damaged_file} (epoch 3): tensor 'fc" in line and "sha256 is" in line, line
    assert "index/weights says" in line
    assert err.splitlines() == [
        f"layerswap: error: 1 network(s) not measured: a weights file does not match index/weights (named "
        f"above); `layerswap verify {root}` lists every damaged file"
    ]
    assert "Traceback" not in out + err
    assert batch_files(root, first.trial_id) == []  # nothing written for it
    # interpolate needs epochs 0 and 3 only: the missing epoch=0001 does not stop the second network
    (written,) = batch_files(root, second.trial_id)
    rows = Store.open(str(root)).read_index("swaps").to_pylist()
    assert sum(r["trial_id"] == second.trial_id and r["kind"] == "interpolate" for r in rows) == 2 * 11
    assert "analyze: 1 networks measured (22 new rows), 1 failed" in out

    # a second run measures nothing more and says the same
    assert main(["analyze", str(root), "--swaps", "interpolate"]) == 2
    assert batch_files(root, first.trial_id) == [] and batch_files(root, second.trial_id) == [written]


def test_the_loader_checks_every_file_it_reads(damaged):
    root, first, second = damaged
    store = Store.open(str(root))
    cpu = torch.device("cpu")
    expected = (r"epoch=0003\.safetensors \(epoch 3\): tensor 'fc\d\.(weight|bias)': sha256 is \w{12}…, "
                r"index/weights says \w{12}…")
    with pytest.raises(WeightsDamaged, match=expected):
        load_checkpoints(store, first, cpu)
    assert sorted(load_checkpoints(store, first, cpu, [0, 1, 2])) == [0, 1, 2]
    with pytest.raises(WeightsDamaged, match=r"epoch=0001\.safetensors \(epoch 1\) is missing"):
        load_checkpoints(store, second, cpu)
    loaded = load_checkpoints(store, second, cpu, [0, 3])
    assert set(loaded[3]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_a_finished_network_without_weight_rows_is_refused(pristine, tmp_path):
    root, (first, _) = pristine
    shutil.copytree(root, tmp_path / "store")
    (tmp_path / "store" / layout.index_path("weights", first.trial_id)).unlink()
    with pytest.raises(WeightsDamaged, match=rf"index/weights/{first.trial_id}\.parquet is missing"):
        load_checkpoints(Store.open(str(tmp_path / "store")), first, torch.device("cpu"))
