"""The trials' optimizers and schedule against torch.optim's: the same weights bit for bit, the same
state-dict format both ways, and no torch._dynamo import in a process that trains."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from trainables.train.optimizer import SGD, Adam
from trainables.train.recipe import LearningRateSchedule

OURS_AND_TORCHS = {
    "sgd": (lambda p: SGD(p, 0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum-decay": (lambda p: SGD(p, 0.1, momentum=0.9, weight_decay=5e-4),
                           lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4)),
    "sgd-nesterov": (lambda p: SGD(p, 0.05, momentum=0.9, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "adam": (lambda p: Adam(p, 1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    "adam-decay": (lambda p: Adam(p, 1e-2, weight_decay=1e-3),
                   lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)),
}

ROOT = Path(__file__).resolve().parent.parent


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def train(model: nn.Module, optimizer, steps: range, schedule=None) -> None:
    """``steps`` minibatch steps, each step's batch drawn from a generator seeded with its index."""
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def assert_same_weights(first: nn.Module, second: nn.Module) -> None:
    theirs = second.state_dict()
    for name, mine in first.state_dict().items():
        assert torch.equal(mine, theirs[name]), name


@pytest.mark.parametrize("name", OURS_AND_TORCHS)
def test_steps_train_torch_optims_weights_bit_for_bit_with_its_state_dict(name):
    make_ours, make_torchs = OURS_AND_TORCHS[name]
    ours, torchs = network(), network()
    mine, theirs = make_ours(list(ours.parameters())), make_torchs(list(torchs.parameters()))
    train(ours, mine, range(6))
    train(torchs, theirs, range(6))
    assert_same_weights(ours, torchs)
    assert not torch.equal(ours[0].weight, network()[0].weight)  # it trained
    saved, expected = mine.state_dict(), theirs.state_dict()
    assert saved["param_groups"] == expected["param_groups"]
    assert saved["state"].keys() == expected["state"].keys()
    for index, state in expected["state"].items():
        assert saved["state"][index].keys() == state.keys()
        for key, tensor in state.items():
            assert torch.equal(saved["state"][index][key], tensor), (index, key)


@pytest.mark.parametrize("name", ["sgd-momentum-decay", "adam"])
@pytest.mark.parametrize("direction", ["torch's into ours", "ours into torch's"])
def test_a_state_saved_by_either_continues_in_the_other_bit_for_bit(name, direction, tmp_path: Path):
    """A resumable state written by an earlier version (torch.optim's) loads into ours, and back."""
    make_ours, make_torchs = OURS_AND_TORCHS[name]
    make_first, make_second = (make_torchs, make_ours) if direction == "torch's into ours" else (
        make_ours, make_torchs)
    reference = network()
    optimizer = make_first(list(reference.parameters()))
    train(reference, optimizer, range(3))
    torch.save({"model": reference.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "state.pt")
    train(reference, optimizer, range(3, 7))

    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = network()
    resumed.load_state_dict(saved["model"])
    continued = make_second(list(resumed.parameters()))
    continued.load_state_dict(saved["optimizer"])
    train(resumed, continued, range(3, 7))
    assert_same_weights(resumed, reference)


def test_a_state_for_other_parameters_is_refused_in_one_line():
    saved = SGD(list(network().parameters()), 0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="4 parameters saved, 1 to optimize"):
        SGD([nn.Parameter(torch.zeros(2))], 0.1, momentum=0.9).load_state_dict(saved)


def test_the_schedule_sets_lambdalrs_rates_and_resumes_from_a_lambdalr_state():
    def factor(step: int) -> float:
        return 0.5 ** (step // 3) * (1 + step % 2)

    ours, torchs = network(), network()
    mine, theirs = SGD(list(ours.parameters()), 0.2), torch.optim.SGD(torchs.parameters(), lr=0.2)
    schedule = LearningRateSchedule(mine, factor)
    reference = torch.optim.lr_scheduler.LambdaLR(theirs, factor)
    rates, expected = [], []
    for step in range(10):
        rates.append(mine.lr)
        expected.append(theirs.param_groups[0]["lr"])
        train(ours, mine, range(step, step + 1), schedule)
        train(torchs, theirs, range(step, step + 1), reference)
    assert rates == expected and len(set(rates)) > 3
    assert_same_weights(ours, torchs)
    assert schedule.state_dict() == {"last_epoch": 10, "_last_lr": reference.get_last_lr()}

    resumed = SGD(list(network().parameters()), 0.2)  # as training resumes: built, then loaded
    again = LearningRateSchedule(resumed, factor)
    resumed.load_state_dict(theirs.state_dict())
    again.load_state_dict(reference.state_dict())
    again.step()
    reference.step()
    assert again.last_epoch == 11 and resumed.lr == theirs.param_groups[0]["lr"]


def test_a_process_that_trains_networks_and_packs_never_imports_torch_dynamo():
    """torch.optim's optimizers import torch._dynamo at their first use (1.8 s on this machine)."""
    script = textwrap.dedent("""
        import sys
        from dataclasses import replace
        import torch
        from trainables.data.datasets import load_dataset
        from trainables.spec import OptimizerSpec, ScheduleSpec, TrialSpec
        from trainables.train.network import train_network
        from trainables.train.pack import train_pack

        data = load_dataset("synthetic").tensors(torch.device("cpu"))
        spec = TrialSpec(dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(8,),
                         seed=0, epochs=2, batch_size=64, optimizer=OptimizerSpec("sgd", 0.1, 0.9),
                         checkpoints=(0, 2), schedule=ScheduleSpec("cosine"))
        train_network(spec, data, torch.device("cpu"))
        adam = replace(spec, optimizer=OptimizerSpec("adam", 1e-3))
        train_pack([replace(adam, seed=s) for s in range(2)], data, torch.device("cpu"))
        print("torch._dynamo" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False", result.stdout + result.stderr
