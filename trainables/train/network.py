"""Training one network on a dataset held as pre-normalised tensors on its device."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from trainables.data.tensors import DatasetTensors
from trainables.models.family import StateDict
from trainables.models.registry import spec_network
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec
from trainables.train.cuda_graphs import training_step
from trainables.train.optimizer import Optimizer, make_optimizer
from trainables.train.precision import forward_precision, training_precision
from trainables.train.recipe import (
    augment_generator,
    epoch_draws,
    flip_crop,
    graphs_allowed,
    make_scheduler,
    with_draws,
)

SnapshotCallback = Callable[[int, StateDict], None]
"""Called with (epoch, detached copy of the weights) at epoch 0 and each checkpoint epoch."""


@dataclass(frozen=True)
class TrainingState:
    """Everything needed to continue training bit-identically after ``epoch``.

    ``augment_rng``: the augmentation generator's state (None without
    augmentation); ``scheduler``: the learning-rate scheduler's state dict
    (None without a schedule). Holds references to live tensors: serialise it
    before training goes on.
    """

    epoch: int
    model: StateDict
    optimizer: dict
    shuffle_rng: torch.Tensor
    augment_rng: torch.Tensor | None = None
    scheduler: dict | None = None
    diverged: tuple[int | None, ...] = ()
    """A pack's: per network, the epoch its training loss became non-finite (None: it did not)."""

    def save(self, path: Path) -> None:
        torch.save(
            {"epoch": self.epoch, "model": self.model, "optimizer": self.optimizer,
             "shuffle_rng": self.shuffle_rng, "augment_rng": self.augment_rng, "scheduler": self.scheduler,
             "diverged": self.diverged},
            path,
        )

    @classmethod
    def load(cls, path: Path) -> TrainingState:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


@dataclass(frozen=True)
class EpochEnd:
    """What a trainer reports after each epoch: mean training loss and resumable state."""

    epoch: int
    train_loss: float
    state: TrainingState


EpochCallback = Callable[[EpochEnd], None]


@dataclass(frozen=True)
class Resume:
    """Continue from ``state``; ``snapshots`` are the checkpoint weights saved up to then."""

    state: TrainingState
    snapshots: dict[int, StateDict]


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained model and its weights at every checkpoint epoch (detached copies)."""

    model: nn.Module
    checkpoints: dict[int, StateDict]
    train_seconds: float
    diverged_epoch: int | None = None
    """The epoch whose mean training loss was not finite (training ended there: ``checkpoints`` holds
    only those before it); None for a network that trained to the end."""


def initial_model(spec: TrialSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The network at epoch 0 for samples of ``input_shape``: its family's init drawn from ``spec.seed``.

    Built on the CPU so the initial weights are bit-identical on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return spec_network(spec, input_shape, n_classes)


def snapshot(model: nn.Module) -> StateDict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def minibatch(data: DatasetTensors, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of ``batch``: sample indices (B,), or (4, B) with the augmentation draws of
    each sample below them (:func:`~trainables.train.recipe.with_draws`)."""
    if batch.dim() == 1:
        return data.x_train.index_select(0, batch), data.y_train.index_select(0, batch)
    x = flip_crop(data.x_train.index_select(0, batch[0]), batch[1:])
    return x, data.y_train.index_select(0, batch[0])


def train_step(
    model: nn.Module, optimizer: Optimizer, data: DatasetTensors, batch: torch.Tensor,
    precision: str,
) -> torch.Tensor:
    """One minibatch step on ``batch`` (:func:`minibatch`, on the data's device); the loss, detached.

    Nothing in it waits for the device (``python -m benchmarks gpu_check`` counts host syncs).
    """
    x, y = minibatch(data, batch)
    with forward_precision(precision, batch.device):
        loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_network(
    spec: TrialSpec,
    data: DatasetTensors,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    on_snapshot: SnapshotCallback | None = None,
    resume: Resume | None = None,
    graphs: bool = True,
) -> TrainedNetwork:
    """Train for ``spec.epochs`` epochs of minibatch steps over a seeded shuffle, or until an epoch's
    mean training loss is not finite (checked at each epoch's end, so steps never wait for the device):
    then training ends there and ``diverged_epoch`` says when.

    The model trains in train mode (set here). The last partial batch is kept
    (as a DataLoader with drop_last=False).
    The precision setting holds for the whole loop (:func:`training_precision`);
    augmentation and the learning-rate schedule are :mod:`trainables.train.recipe`'s.
    ``train_seconds`` counts only the epochs run by this call. ``graphs``: on a
    CUDA device, replay the steps from CUDA graphs (same weights, fewer launches;
    ``trainables/train/cuda_graphs.py``), unless the spec has a schedule.
    """
    model = initial_model(spec, data.input_shape, data.n_classes).to(device).train()
    optimizer = make_optimizer(spec.optimizer, list(model.parameters()))
    shuffle = torch.Generator().manual_seed(derive_seed("shuffle", spec.seed))
    augment = augment_generator(spec, device)
    n_train = data.x_train.shape[0]
    scheduler = make_scheduler(spec, optimizer, -(-n_train // spec.batch_size))
    if resume is None:
        first_epoch, checkpoints = 1, {0: snapshot(model)}
        if on_snapshot is not None:
            on_snapshot(0, checkpoints[0])
    else:
        model.load_state_dict(resume.state.model)
        optimizer.load_state_dict(resume.state.optimizer)
        shuffle.set_state(resume.state.shuffle_rng)
        if augment is not None:
            augment.set_state(resume.state.augment_rng)
        if scheduler is not None:
            scheduler.load_state_dict(resume.state.scheduler)
        first_epoch, checkpoints = resume.state.epoch + 1, dict(resume.snapshots)
    step = training_step(
        partial(train_step, model, optimizer, data, precision=spec.precision), optimizer, device,
        graphs and graphs_allowed(spec),
    )
    started = time.perf_counter()
    diverged = None
    with training_precision(spec.precision):
        for epoch in range(first_epoch, spec.epochs + 1):
            order = torch.randperm(n_train, generator=shuffle).to(device)
            batches = with_draws(order, None if augment is None else epoch_draws(augment, n_train, device))
            loss_sum = torch.zeros((), device=device)
            for start in range(0, n_train, spec.batch_size):
                batch = batches[..., start : start + spec.batch_size]
                loss_sum += step(batch) * batch.shape[-1]
                if scheduler is not None:
                    scheduler.step()
            train_loss = float(loss_sum) / n_train  # the epoch's one wait for the device
            if not math.isfinite(train_loss):
                diverged = epoch  # NaN or inf: nothing after this epoch can be trained or saved
                break
            if epoch in spec.checkpoints:
                checkpoints[epoch] = snapshot(model)
                if on_snapshot is not None:
                    on_snapshot(epoch, checkpoints[epoch])
            if on_epoch is not None:
                state = TrainingState(
                    epoch, model.state_dict(), optimizer.state_dict(), shuffle.get_state(),
                    None if augment is None else augment.get_state(),
                    None if scheduler is None else scheduler.state_dict(),
                )
                on_epoch(EpochEnd(epoch, train_loss, state))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TrainedNetwork(model, checkpoints, time.perf_counter() - started, diverged)
