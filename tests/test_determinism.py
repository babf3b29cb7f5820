"""The same spec gives bit-identical initial weights and the same trained weights on CPU."""

from __future__ import annotations

import torch

from orchestrator.config.grid import expand_grid
from trainables.data.datasets import load_dataset
from trainables.train.network import initial_model, train_network


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
