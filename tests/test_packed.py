"""Packed training: K networks trained at once match K networks trained one by one."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from orchestrator.run.budget import MemoryBudget, check_memory
from orchestrator.run.packing import MAX_PACK, largest_pack, make_packs, make_queues
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.network import TrainingState, initial_model, train_network
from trainables.train.pack import PackEpochEnd, PackResume, train_pack
from trainables.train.pack_shape import PackShape

CPU = torch.device("cpu")

# After one epoch (16 SGD steps here) packed and unpacked weights differ by a few
# float32 ulps: the pack multiplies with batched kernels (baddbmm) whose blocking
# and summation order differ from addmm's, so each step's gradients differ in the
# last bits (float32 epsilon is 1.2e-7) and training carries that forward. The
# observed difference is below 1e-6; 1e-5 absolute leaves room for other BLAS
# builds while still catching any real difference (a wrong batch, a wrong
# gradient scale), which moves weights by ~1e-2 and more.
ATOL = 1e-5
RTOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def make_specs(k: int, optimizer: OptimizerSpec, epochs: int = 1) -> list[TrialSpec]:
    base = TrialSpec(
        dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(24, 12),
        seed=0, epochs=epochs, batch_size=64, optimizer=optimizer,
        checkpoints=tuple(range(epochs + 1)),
    )
    return [replace(base, seed=seed) for seed in range(3, 3 + k)]


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic").tensors(CPU)


def test_initial_weights_are_bit_identical_to_unpacked(data):
    specs = make_specs(3, OptimizerSpec("sgd", 0.1))
    packed = train_pack(specs, data, CPU)
    for spec, network in zip(specs, packed, strict=True):
        initial = initial_model(spec, data.input_shape, data.n_classes).state_dict()
        assert list(network.checkpoints[0]) == list(initial)
        for key, tensor in initial.items():
            assert torch.equal(network.checkpoints[0][key], tensor)


@pytest.mark.parametrize(
    "optimizer",
    [
        OptimizerSpec("sgd", 0.1),
        OptimizerSpec("sgd", 0.05, momentum=0.9, weight_decay=1e-3),
        OptimizerSpec("adam", 1e-3, weight_decay=1e-4),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_one_epoch_packed_matches_unpacked(data, optimizer):
    specs = make_specs(3, optimizer)
    packed_losses: list[list[float]] = []
    packed = train_pack(specs, data, CPU, on_epoch=lambda end: packed_losses.append(end.train_losses))
    for k, (spec, network) in enumerate(zip(specs, packed, strict=True)):
        seen: list[float] = []
        alone = train_network(spec, data, CPU, on_epoch=lambda end, seen=seen: seen.append(end.train_loss))
        assert set(network.checkpoints) == set(alone.checkpoints) == {0, 1}
        for key, expected in alone.checkpoints[1].items():
            torch.testing.assert_close(network.checkpoints[1][key], expected, atol=ATOL, rtol=RTOL)
            assert not torch.equal(expected, alone.checkpoints[0][key])  # training moved it
        final = network.model.state_dict()
        assert all(torch.equal(final[key], network.checkpoints[1][key]) for key in final)
        assert packed_losses[0][k] == pytest.approx(seen[0], rel=1e-5)


def test_a_resumed_pack_finishes_bit_identical_to_an_uninterrupted_one(data, tmp_path):
    specs = make_specs(2, OptimizerSpec("adam", 1e-3), epochs=2)

    def save_state(end: PackEpochEnd) -> None:
        end.state.save(tmp_path / f"epoch{end.epoch}.pt")  # the state holds live tensors

    snapshots: list[dict[int, dict]] = [{}, {}]
    whole = train_pack(
        specs, data, CPU, on_epoch=save_state,
        on_snapshot=lambda k, epoch, state: snapshots[k].update({epoch: state}),
    )
    assert [set(s) for s in snapshots] == [{0, 1, 2}, {0, 1, 2}]
    saved = [{e: s[e] for e in (0, 1)} for s in snapshots]
    state = TrainingState.load(tmp_path / "epoch1.pt")
    resumed = train_pack(specs, data, CPU, resume=PackResume(state, saved))
    for before, after in zip(whole, resumed, strict=True):
        for epoch in (0, 1, 2):
            expected = before.checkpoints[epoch]
            assert all(torch.equal(expected[key], t) for key, t in after.checkpoints[epoch].items())


def test_pack_of_different_widths_or_a_repeated_trial_is_refused(data):
    specs = make_specs(2, OptimizerSpec("sgd", 0.1))
    with pytest.raises(ValueError, match="widths"):
        train_pack([specs[0], replace(specs[1], widths=(24, 8))], data, CPU)
    with pytest.raises(ValueError, match="epochs"):
        train_pack([specs[0], replace(specs[1], epochs=2, checkpoints=(0, 1, 2))], data, CPU)
    with pytest.raises(ValueError, match="twice"):
        train_pack([specs[0], specs[0]], data, CPU)
    with pytest.raises(ValueError, match="no specs"):
        train_pack([], data, CPU)


def seed_shape(widths=(2048, 1024, 512, 256), optimizer_slots=2) -> PackShape:
    return PackShape("mlp", widths, input_shape=(784,), n_classes=10, n_train=60_000, n_test=10_000,
                     batch_size=256, n_checkpoints=6, optimizer_slots=optimizer_slots)


def test_memory_estimate_grows_with_the_pack_and_refusals_name_the_figures():
    shape = seed_shape()
    assert shape.parameters == 4_364_554  # 784*2048+2048 + 2048*1024+1024 + ... + 256*10+10
    one, eight = shape.memory().peak(1), shape.memory().peak(8)
    params_bytes = 4 * shape.parameters  # the seed network's float32 weights
    assert eight - one >= 7 * params_bytes * 8  # weights, grads, Adam state, 6 checkpoints
    assert seed_shape(optimizer_slots=0).memory().per_network == shape.memory().per_network - 2 * params_bytes
    budget = MemoryBudget("cuda", int(0.1 * 2**30), "its share (...) is 0.10 GiB", process_bytes=2**20)
    expected = (r"a trial of 8 network\(s\) needs about \d+\.\d\d GiB of GPU memory "
                r"but its share \(\.\.\.\) is 0\.10 GiB; raise resources.gpu_per_trial")
    with pytest.raises(ConfigError, match=expected):
        check_memory(shape, 8, budget)
    check_memory(shape, 1, MemoryBudget("cpu", 2**40, "plenty"))
    check_memory(shape, 8, None)  # unknown: not checked


def test_automatic_pack_on_cpu_packs_small_networks_more_than_large_ones_and_fits_memory():
    small = largest_pack(seed_shape((256, 128, 64, 32)), None, threads=1)
    large = largest_pack(seed_shape(), None, threads=1)
    assert 1 <= large < small <= MAX_PACK
    shape = seed_shape((256, 128, 64, 32))
    memory = shape.memory()
    tight = MemoryBudget("cpu", int((memory.shared + 3.5 * memory.per_network) / 0.8), "tight")
    assert largest_pack(shape, tight, threads=1) == 3  # fits 3.5 networks in 80% of the budget
    gpu = MemoryBudget("cuda", 2**40, "a huge GPU", process_bytes=2**30)
    assert largest_pack(seed_shape(), gpu, threads=1) == MAX_PACK
    assert largest_pack(seed_shape(), None, threads=1, gpu=True) == 1  # unknown GPU memory


@pytest.mark.parametrize(
    ("pack", "slots", "widths", "seeds", "sizes"),
    [
        ("auto", 2, [[16, 8], [12]], 5, [3, 2, 3, 2]),
        ("auto", 1, [[16, 8], [12]], 5, [5, 5]),
        (4, 2, [[16, 8], [12]], 5, [4, 1, 4, 1]),
        ("auto", 8, [[16, 8], [12]], 5, [1] * 10),
        ("auto", 4, [[16, 8]], 10, [3, 3, 2, 2]),  # one wave, not 2 x 5 waiting for a second one
        ("auto", 3, [[16, 8]], 2, [1, 1]),
    ],
)
def test_auto_packs_group_seeds_of_one_width_config_in_a_multiple_of_the_slots(pack, slots, widths, seeds,
                                                                               sizes):
    config = parse_config(tiny_raw_config("unused", widths=widths, seeds=seeds, pack=pack,
                                          resources={"cpu_per_trial": 1, "gpu_per_trial": 0}))
    packs = make_packs(config, expand_grid(config), {"synthetic": load_dataset("synthetic")}, slots, None,
                       lambda _: None)
    assert [len(p) for p in packs] == sizes
    for group in packs:
        assert len({spec.widths for spec in group}) == 1
    assert sorted(s.trial_id for g in packs for s in g) == sorted(s.trial_id for s in expand_grid(config))


def test_many_packs_become_a_bounded_number_of_balanced_queues(tiny_config):
    specs = expand_grid(tiny_config)
    packs = [[specs[i % len(specs)]] for i in range(100)]
    costs = [1.0] * 90 + [5.0] * 10
    queues = make_queues(packs, slots=2, costs=costs)
    assert len(queues) == 8
    members = [[next(i for i, p in enumerate(packs) if p is pack) for pack in queue] for queue in queues]
    assert sorted(i for queue in members for i in queue) == list(range(100))  # every pack once
    assert all(queue == sorted(queue) for queue in members)  # in grid order within a queue
    loads = [sum(costs[i] for i in queue) for queue in members]
    assert max(loads) - min(loads) <= 1.0
    assert make_queues(packs[:8], slots=2, costs=costs[:8]) == [[pack] for pack in packs[:8]]
