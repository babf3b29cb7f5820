"""The same spec gives bit-identical initial weights, the same trained weights on CPU, and files
of the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
import torch

from orchestrator.config.grid import expand_grid
from trainables.data.datasets import load_dataset
from trainables.store import Store, layout
from trainables.train.network import initial_model, train_network
from trainables.worker.pack_job import Placement, run_network, save_checkpoint


def test_initial_weights_are_bit_identical_and_seed_dependent(tiny_config):
    spec_a, spec_b = expand_grid(tiny_config)[:2]
    first = initial_model(spec_a, (20,), 4).state_dict()
    torch.manual_seed(12345)  # the global RNG must not matter
    again = initial_model(spec_a, (20,), 4).state_dict()
    other_seed = initial_model(spec_b, (20,), 4).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["fc1.weight"], other_seed["fc1.weight"])


def test_training_twice_gives_the_same_weights(tiny_config):
    spec = expand_grid(tiny_config)[0]
    data = load_dataset(spec.dataset).tensors("cpu")
    runs = [train_network(spec, data, torch.device("cpu")) for _ in range(2)]
    assert set(runs[0].checkpoints) == set(spec.checkpoints)
    for epoch in spec.checkpoints:
        a, b = runs[0].checkpoints[epoch], runs[1].checkpoints[epoch]
        assert all(torch.equal(a[key], b[key]) for key in a)
    trained, initial = runs[0].checkpoints[spec.epochs], runs[0].checkpoints[0]
    assert not torch.equal(trained["fc1.weight"], initial["fc1.weight"])


TIMINGS = ("train_seconds", "swap_seconds", "write_seconds", "finished_at")
"""Trial-row columns that say when and how long, not what: the only bytes two runs may differ in."""


def test_the_same_network_trained_twice_gives_identical_files(tiny_config, tmp_path):
    spec = expand_grid(tiny_config)[0]
    data = load_dataset(spec.dataset).tensors("cpu")
    roots = [tmp_path / "first", tmp_path / "second"]
    placement = Placement.here(torch.device("cpu"))
    for root in roots:
        run_network(spec, tiny_config.plan, data, Store.open(str(root)), "tiny", placement)

    def sha256s(root: Path) -> dict[str, str]:
        return {
            str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file() and not str(path.relative_to(root)).startswith("index/trials")
        }

    first, second = (sha256s(root) for root in roots)
    assert first == second
    assert sum(name.endswith(".safetensors") for name in first) == len(spec.checkpoints)
    indexes = {name.split("/")[1] for name in first if name.startswith("index/")}
    assert indexes == {"weights", "swaps", "layers"}
    rows = [Store.open(str(root)).read_index("trials").to_pylist()[0] for root in roots]
    first_row, second_row = ({k: v for k, v in row.items() if k not in TIMINGS} for row in rows)
    assert first_row == second_row


def test_checkpoint_files_do_not_depend_on_hash_order(tmp_path):
    """safetensors writes its metadata map in hash order, which varies even within a process."""
    store = Store.open(str(tmp_path))
    state = {"fc1.weight": torch.arange(6.0).reshape(2, 3), "fc1.bias": torch.ones(2)}
    layers = {"fc1.weight": "fc1", "fc1.bias": "fc1"}
    files = set()
    for _ in range(16):
        save_checkpoint(store, "0123456789abcdef", 1, state, layers)
        files.add(store.read_bytes(layout.weights_path("0123456789abcdef", 1)))
    [data] = files
    header = data[8 : 8 + int.from_bytes(data[:8], "little")]
    assert header.startswith(b'{"__metadata__":{"epoch":"1","trial_id":"0123456789abcdef"},')
    assert (8 + len(header)) % 8 == 0
    loaded = safetensors.torch.load(data)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
