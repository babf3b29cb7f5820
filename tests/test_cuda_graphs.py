"""Training steps replayed from CUDA graphs train the eager steps' weights bit for bit.

The graphed path only runs on a CUDA device; on a CPU the step is the eager
one. The bit-identity tests need a GPU and are skipped without one.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from trainables.data.datasets import load_dataset
from trainables.data.tensors import DatasetTensors
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.cuda_graphs import WARMUP_STEPS, GraphedStep, graphs_enabled, training_step
from trainables.train.device import make_deterministic
from trainables.train.network import TrainingState, train_network
from trainables.train.optimizer import SGD
from trainables.train.pack import PackEpochEnd, PackResume, train_pack

CPU = torch.device("cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

EPOCHS = WARMUP_STEPS + 2
"""Enough epochs that the short last batch's graph is captured and then replayed."""


def make_specs(k: int, optimizer: OptimizerSpec, precision: str = "fp32") -> list[TrialSpec]:
    base = TrialSpec(
        dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(24, 12), seed=0,
        epochs=EPOCHS, batch_size=64, optimizer=optimizer, checkpoints=(0, 2, EPOCHS), precision=precision,
    )
    return [replace(base, seed=seed) for seed in range(5, 5 + k)]


def ragged(data: DatasetTensors) -> DatasetTensors:
    """The data cut to 6 full batches of 64 and a short one of 40."""
    n = 6 * 64 + 40
    return replace(data, x_train=data.x_train[:n].contiguous(), y_train=data.y_train[:n].contiguous())


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_on_a_cpu_the_step_is_the_eager_one_and_the_environment_can_turn_graphs_off(monkeypatch):
    optimizer = SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def step(batch: torch.Tensor) -> torch.Tensor:
        return batch.float()

    assert training_step(step, optimizer, CPU, graphs=True) is step
    monkeypatch.delenv("LAYERSWAP_CUDA_GRAPHS", raising=False)
    assert graphs_enabled() is True
    monkeypatch.setenv("LAYERSWAP_CUDA_GRAPHS", "0")
    assert graphs_enabled() is False
    monkeypatch.setenv("LAYERSWAP_CUDA_GRAPHS", "1")
    assert graphs_enabled() is True


@pytest.fixture(scope="module")
def gpu_data() -> DatasetTensors:
    make_deterministic()
    return ragged(load_dataset("synthetic").tensors(torch.device("cuda", 0)))


@needs_gpu
@pytest.mark.parametrize("optimizer", [OptimizerSpec("sgd", 0.1, momentum=0.9), OptimizerSpec("adam", 1e-3)])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_graphed_training_is_bit_identical_to_eager_alone_and_packed(gpu_data, optimizer, precision):
    device = gpu_data.x_train.device
    specs = make_specs(3, optimizer, precision)
    graphed = train_pack(specs, gpu_data, device, graphs=True)
    eager = train_pack(specs, gpu_data, device, graphs=False)
    for a, b in zip(graphed, eager, strict=True):
        for epoch in a.checkpoints:
            assert_same_weights(a.checkpoints[epoch], b.checkpoints[epoch])
    alone_graphed = train_network(specs[0], gpu_data, device, graphs=True)
    alone_eager = train_network(specs[0], gpu_data, device, graphs=False)
    assert_same_weights(alone_graphed.model.state_dict(), alone_eager.model.state_dict())


@needs_gpu
def test_both_batch_shapes_are_captured_and_their_losses_match_the_eager_steps(gpu_data):
    """The graph really replays: after WARMUP_STEPS eager calls per shape, both shapes are captured."""
    device = gpu_data.x_train.device
    losses = {}
    for graphs in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(gpu_data.x_train.shape[1], 10).to(device)
        optimizer = SGD(list(model.parameters()), lr=0.1, momentum=0.9)

        def eager(batch: torch.Tensor, model=model, optimizer=optimizer) -> torch.Tensor:
            x, y = gpu_data.x_train.index_select(0, batch), gpu_data.y_train.index_select(0, batch)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.detach()

        step = training_step(eager, optimizer, device, graphs)
        order = torch.arange(gpu_data.x_train.shape[0], device=device)
        seen = []
        for _ in range(EPOCHS):
            for start in range(0, order.numel(), 64):
                seen.append(step(order[start : start + 64]).clone())
        losses[graphs] = torch.stack(seen)
        if graphs:
            assert isinstance(step, GraphedStep) and step.captured == ((64,), (40,))
    assert torch.equal(losses[True], losses[False])


@needs_gpu
def test_a_graphed_pack_resumed_after_epoch_two_finishes_bit_identical(gpu_data, tmp_path):
    device = gpu_data.x_train.device
    specs = make_specs(2, OptimizerSpec("adam", 1e-3))

    def save_state(end: PackEpochEnd) -> None:
        end.state.save(tmp_path / f"epoch{end.epoch}.pt")

    snapshots: list[dict[int, dict]] = [{}, {}]
    whole = train_pack(specs, gpu_data, device, on_epoch=save_state,
                       on_snapshot=lambda k, epoch, state: snapshots[k].update({epoch: state}))
    saved = [{epoch: s[epoch] for epoch in (0, 2)} for s in snapshots]
    resumed = train_pack(specs, gpu_data, device,
                         resume=PackResume(TrainingState.load(tmp_path / "epoch2.pt"), saved))
    for before, after in zip(whole, resumed, strict=True):
        assert_same_weights(before.model.state_dict(), after.model.state_dict())
