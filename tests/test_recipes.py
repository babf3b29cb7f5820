"""Training recipes: flip-crop augmentation on the device, learning-rate schedules, Nesterov momentum,
and resuming with all of them bit for bit."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.config.values import ConfigError
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.seeding import derive_seed
from trainables.spec import OptimizerSpec, ScheduleSpec, TrialSpec
from trainables.train.network import Resume, TrainingState, train_network
from trainables.train.optimizer import make_optimizer
from trainables.train.pack import PackResume, train_pack
from trainables.train.recipe import PAD, augment_generator, epoch_draws, flip_crop, lr_factor

CPU = torch.device("cpu")
SPEC = TrialSpec(
    dataset="synthetic-images", data_mean=(0.0, 0.0, 0.0), data_std=(1.0, 1.0, 1.0), model="cnn",
    widths=(4, 8), seed=2, epochs=4, batch_size=64, optimizer=OptimizerSpec("sgd", 0.05, momentum=0.9),
    checkpoints=(0, 2, 4), norm="batch", augment="flip-crop",
    schedule=ScheduleSpec("cosine", warmup_epochs=1),
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic-images").tensors(CPU)


def test_flip_crop_is_torchvisions_pad_crop_and_flip_per_image():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8, generator=generator)
    draws = epoch_draws(generator, 6, CPU)
    assert draws.shape == (3, 6) and draws.dtype == torch.int64
    out = flip_crop(x, draws)
    assert draws[0].sum() not in (0, 6)  # both flipped and unflipped images
    for i, (flip, dy, dx) in enumerate(draws.t().tolist()):
        expected = TF.crop(TF.pad(x[i], [PAD]), dy, dx, 8, 8)
        assert torch.equal(out[i], TF.horizontal_flip(expected) if flip else expected)


def test_draws_cover_every_offset_and_both_flips():
    draws = epoch_draws(torch.Generator().manual_seed(1), 4000, CPU)
    assert set(draws[0].tolist()) == {0, 1}
    assert set(draws[1].tolist()) == set(draws[2].tolist()) == set(range(2 * PAD + 1))
    assert abs(draws[0].float().mean().item() - 0.5) < 0.05


def test_the_augmentation_stream_is_the_networks_own_seeded_one():
    generator = augment_generator(SPEC, CPU)
    expected = torch.Generator().manual_seed(derive_seed("augment", SPEC.seed))
    assert torch.equal(epoch_draws(generator, 10, CPU), epoch_draws(expected, 10, CPU))
    assert augment_generator(replace(SPEC, augment="none"), CPU) is None


def stepped(scheduler_class, steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = scheduler_class(optimizer, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_schedules_are_multisteplr_and_cosineannealinglr_per_optimizer_step():
    spe, epochs = 7, 5
    step = lr_factor(ScheduleSpec("step", (2, 4), 0.1), spe, epochs)
    reference = stepped(torch.optim.lr_scheduler.MultiStepLR, spe * epochs, milestones=[2 * spe, 4 * spe],
                        gamma=0.1)
    assert [step(i) for i in range(spe * epochs)] == pytest.approx(reference, rel=1e-12)
    cosine = lr_factor(ScheduleSpec("cosine"), spe, epochs)
    reference = stepped(torch.optim.lr_scheduler.CosineAnnealingLR, spe * epochs, T_max=spe * epochs)
    assert [cosine(i) for i in range(spe * epochs)] == pytest.approx(reference, rel=1e-9, abs=1e-12)
    warm = lr_factor(ScheduleSpec("cosine", warmup_epochs=1), spe, epochs)
    assert [warm(i) for i in range(spe)] == pytest.approx([(i + 1) / spe for i in range(spe)])
    assert warm(spe) == 1.0 and warm(spe * epochs - 1) == pytest.approx(
        (1 + math.cos(math.pi * (spe * (epochs - 1) - 1) / (spe * (epochs - 1)))) / 2)


def test_training_steps_the_schedule_after_every_optimizer_step(data):
    states: list[TrainingState] = []
    spec = replace(SPEC, augment="none", schedule=ScheduleSpec("step", (1, 3), 0.5))
    train_network(spec, data, CPU, on_epoch=lambda end: states.append(end.state))
    steps_per_epoch = math.ceil(384 / 64)
    assert [s.scheduler["last_epoch"] for s in states] == [steps_per_epoch * e for e in (1, 2, 3, 4)]
    assert [s.scheduler["_last_lr"][0] for s in states] == pytest.approx([0.025, 0.025, 0.0125, 0.0125])


def test_nesterov_momentum_reaches_the_optimizer():
    params = [nn.Parameter(torch.zeros(2))]
    assert make_optimizer(OptimizerSpec("sgd", 0.1, 0.9, nesterov=True), params).hyperparameters["nesterov"]
    assert not make_optimizer(OptimizerSpec("sgd", 0.1, 0.9), params).hyperparameters["nesterov"]


def test_augmentation_changes_training_and_repeats_bit_for_bit(data):
    first, again = train_network(SPEC, data, CPU), train_network(SPEC, data, CPU)
    plain = train_network(replace(SPEC, augment="none"), data, CPU)
    for key, tensor in first.checkpoints[4].items():
        assert torch.equal(tensor, again.checkpoints[4][key]), key
    assert not torch.equal(first.checkpoints[4]["conv1.weight"], plain.checkpoints[4]["conv1.weight"])


def saved(state: TrainingState, path: Path) -> TrainingState:
    state.save(path)
    return TrainingState.load(path)


def test_a_resumed_network_with_augmentation_and_a_schedule_is_bit_identical(data, tmp_path):
    full = train_network(SPEC, data, CPU)
    states: dict[int, TrainingState] = {}
    train_network(SPEC, data, CPU, on_epoch=lambda end: states.setdefault(
        end.epoch, saved(end.state, tmp_path / f"{end.epoch}.pt")))
    assert states[3].augment_rng is not None and states[3].scheduler is not None
    snapshots = {epoch: full.checkpoints[epoch] for epoch in (0, 2)}
    resumed = train_network(SPEC, data, CPU, resume=Resume(states[3], snapshots))
    for key, tensor in full.checkpoints[4].items():
        assert torch.equal(resumed.checkpoints[4][key], tensor), key


def test_a_resumed_pack_with_augmentation_and_a_schedule_is_bit_identical(data, tmp_path):
    specs = [SPEC, replace(SPEC, seed=3)]
    full = train_pack(specs, data, CPU)
    states: dict[int, TrainingState] = {}
    train_pack(specs, data, CPU, on_epoch=lambda end: states.setdefault(
        end.epoch, saved(end.state, tmp_path / f"{end.epoch}.pt")))
    assert states[1].augment_rng.shape[0] == 2
    snapshots = [{0: network.checkpoints[0]} for network in full]
    resumed = train_pack(specs, data, CPU, resume=PackResume(states[1], snapshots))
    for before, after in zip(full, resumed, strict=True):
        for key, tensor in before.checkpoints[4].items():
            assert torch.equal(after.checkpoints[4][key], tensor), key


# --- the config keys ----------------------------------------------------------------------


def conv_raw(tmp_path, **overrides) -> dict:
    return tiny_raw_config(tmp_path / "store", **{
        "dataset": "synthetic-images", "model": "cnn", "widths": [[4, 8]], "epochs": 6, **overrides})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"schedule": {"name": "linear"}},
     "schedule.name: 'linear' is not allowed; allowed: constant, step, cosine"),
    ({"schedule": {"name": "step"}},
     "schedule.milestones: None is not allowed; expected a non-empty list of distinct epochs in [1, 6], "
     "after the warmup"),
    ({"schedule": {"name": "step", "milestones": [2, 9]}},
     "schedule.milestones: 9 is not allowed; expected a non-empty list of distinct epochs in [1, 6], "
     "after the warmup"),
    ({"schedule": {"name": "cosine", "gamma": 0.5}},
     "schedule.gamma: 0.5 is not allowed; only the step schedule takes gamma"),
    ({"schedule": {"name": "cosine", "warmup_epochs": 6}},
     "schedule.warmup_epochs: 6 is not allowed; expected an integer in [0, 5]"),
    ({"optimizer": {"name": "sgd", "lr": 0.1, "nesterov": True}},
     "optimizer.nesterov: True is not allowed; Nesterov momentum needs name: sgd and momentum > 0"),
    ({"augment": "mixup"}, "augment: 'mixup' is not allowed; allowed: none, flip-crop"),
    ({"dataset": "synthetic", "model": "mlp", "widths": [[8]], "augment": "flip-crop"},
     "augment: 'flip-crop' is not allowed; dataset synthetic has no images to flip and crop; use none"),
    ({"model": "mlp", "widths": [[8]], "norm": "batch"},
     "norm: 'batch' is not allowed for model mlp; allowed: none"),
    ({"norm": "layer"}, "norm: 'layer' is not allowed; allowed: none, batch"),
    ({"factory": "mynets:build"},
     "factory: 'mynets:build' is not allowed; only model: custom takes a factory"),
    ({"model": "custom", "factory": "m:f", "factory_kwargs": {"widths": [3]}},
     "factory_kwargs.widths: [3] is not allowed; input_shape, n_classes and widths are passed by layerswap"),
])
def test_a_bad_recipe_value_is_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as refused:
        parse_config(conv_raw(tmp_path, **overrides))
    assert str(refused.value) == message


def test_the_recipe_keys_round_trip_and_reach_every_spec(tmp_path):
    raw = conv_raw(tmp_path, augment="flip-crop", schedule={"name": "step", "milestones": [4, 2]},
                   optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True})
    config = parse_config(raw)
    assert config.norm == "batch"  # the conv families' default
    assert config.schedule == ScheduleSpec("step", (2, 4), 0.1)  # sorted; gamma's default for step
    assert parse_config(config.to_raw()) == config
    for spec in expand_grid(config):
        assert (spec.norm, spec.augment, spec.schedule, spec.optimizer.nesterov) == (
            "batch", "flip-crop", ScheduleSpec("step", (2, 4), 0.1), True)
    without_widths = {key: value for key, value in conv_raw(tmp_path).items() if key != "widths"}
    assert parse_config(without_widths).widths == ((16, 32),)  # the family's default widths
