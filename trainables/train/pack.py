"""Training a pack of K networks of the same widths at once, in their family's stacked form.

The family stacks the K networks' tensors (:class:`~trainables.models.family.StackedNetworks`;
the MLP's is :class:`~trainables.models.mlp.StackedMLP`: per layer one stacked
transposed weight ``(K, in, out)`` and one stacked bias ``(K, out)``, each step
one ``torch.baddbmm`` over the K networks' own minibatches; the conv families'
is :class:`~trainables.models.functional_stack.FunctionalStack`, ``vmap`` over
``functional_call`` with BatchNorm buffers stacked too); a family without a
stacked form trains one network per trial. Per network, everything matches
:func:`train_network`:

- initial weights: built by :func:`initial_model` and stacked, so epoch 0 is
  bit-identical to the unpacked network;
- shuffling: its own ``torch.Generator`` seeded with ``derive_seed("shuffle", seed)``
  and one ``randperm`` per epoch, so every minibatch holds the same samples;
  augmentation draws from its own generator, and the learning-rate schedule
  (one for the pack: the networks share the spec) steps after every step;
- loss: the sum over networks of each network's mean cross-entropy, so each
  network's gradient is its own;
- optimizer: :mod:`trainables.train.optimizer` on the stacked tensors; SGD (momentum, weight
  decay) and Adam are elementwise, so a stacked step is K independent steps.

Weights after training agree with unpacked training to float tolerance, not
bit for bit: a batched matmul may use other kernels and another summation
order than ``addmm`` (see tests/test_packed.py).

``torch.baddbmm`` was measured against ``torch.vmap`` over ``functional_call``
(``python -m benchmarks pack_kernels``) and kept: 20-55% faster on a 2-core
CPU. ``torch.compile`` of the step was not: 18 s to compile, no gain on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from trainables.data.tensors import DatasetTensors
from trainables.models import registry
from trainables.models.family import StackedNetworks, StateDict
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec
from trainables.train.cuda_graphs import training_step
from trainables.train.network import (
    TrainedNetwork,
    TrainingState,
    initial_model,
    snapshot,
)
from trainables.train.optimizer import Optimizer, make_optimizer
from trainables.train.precision import PRECISIONS, forward_precision, training_precision
from trainables.train.recipe import (
    augment_generator,
    epoch_draws,
    flip_crop,
    graphs_allowed,
    make_scheduler,
    with_draws,
)


@dataclass(frozen=True)
class PackEpochEnd:
    """What :func:`train_pack` reports after each epoch.

    ``train_losses`` is each network's mean training loss, in spec order;
    ``state`` is the whole pack's resumable state: ``model`` holds the stacked
    tensors (:meth:`~trainables.models.family.StackedNetworks.stacked_state`),
    ``shuffle_rng`` the K shuffle generators' states stacked (K, n), and
    ``augment_rng`` the K augmentation generators' likewise; ``stack`` is the
    live stack itself.
    """

    epoch: int
    train_losses: list[float]
    state: TrainingState
    stack: StackedNetworks

    def network(self, k: int) -> StateDict:
        """Network ``k``'s state_dict after this epoch, as views into the live stacked tensors."""
        return self.stack.network_view(k)


@dataclass(frozen=True)
class PackResume:
    """Continue a pack from ``state``; ``snapshots[k]`` are network k's checkpoints saved so far."""

    state: TrainingState
    snapshots: list[dict[int, StateDict]]


PackEpochCallback = Callable[[PackEpochEnd], None]
PackSnapshotCallback = Callable[[int, int, StateDict], None]
"""Called with (network index in the pack, epoch, detached copy of its weights) at epoch 0
and each checkpoint epoch."""

def stack_networks(model: str, models: list[nn.Module]) -> StackedNetworks:
    """``models`` in their family's stacked form; ValueError (one line) for a family without one."""
    stack = registry.family(model).stack
    if stack is None:
        raise ValueError(f"pack: model {model!r} has no stacked form to train networks together; "
                         "set pack: 1")
    return stack(models)


def check_pack(specs: list[TrialSpec]) -> None:
    """ValueError unless ``specs`` are distinct networks of one configuration (the same training
    spec but for the seed: the same ``config_id``)."""
    if not specs:
        raise ValueError("pack: no specs to train")
    first = specs[0]
    for spec in specs[1:]:
        if spec.config_id != first.config_id:
            mine, theirs = first.canonical_fields(), spec.canonical_fields()
            differing = [
                f"{name} ({mine.get(name)!r} vs {theirs.get(name)!r})"
                for name in sorted(mine.keys() | theirs.keys())
                if name != "seed" and mine.get(name) != theirs.get(name)
            ]
            raise ValueError(
                f"pack: the networks differ in {', '.join(differing)}; a pack's networks may differ "
                "only in seed"
            )
    ids = [spec.trial_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"pack: the same trial appears twice ({ids})")
    if first.precision not in PRECISIONS:
        raise ValueError(f"precision: {first.precision!r} is not known; allowed: {', '.join(PRECISIONS)}")


def pack_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each network's mean cross-entropy (K,) from logits (K, B, C) and labels (K, B)."""
    k, b, c = logits.shape
    losses = F.cross_entropy(logits.reshape(k * b, c), labels.reshape(k * b), reduction="none")
    return losses.view(k, b).mean(dim=1)


def gather(data: DatasetTensors, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each network's minibatch: inputs (K, B, *input_shape) and labels (K, B) for sample indices (K, B),
    or for (K, 4, B): each network's indices with their augmentation draws below them.

    ``index_select`` on the flattened indices: 3-4 times faster on a CPU than
    indexing with a 2-D tensor.
    """
    indices = batch if batch.dim() == 2 else batch[:, 0]
    flat = indices.reshape(-1)
    x = data.x_train.index_select(0, flat)
    if batch.dim() == 3:
        x = flip_crop(x, batch[:, 1:].transpose(0, 1).reshape(3, -1))
    return x.view(*indices.shape, *data.input_shape), data.y_train.index_select(0, flat).view(indices.shape)


def pack_step(
    stack: StackedNetworks, optimizer: Optimizer, data: DatasetTensors, batch: torch.Tensor,
    precision: str,
) -> torch.Tensor:
    """One step of every network on its minibatch ``batch`` (K, B) of sample indices; losses (K,), detached.

    Nothing in it waits for the device (``python -m benchmarks gpu_check`` counts host syncs).
    """
    x, y = gather(data, batch)
    with forward_precision(precision, batch.device):
        losses = pack_losses(stack.forward(x), y)
    optimizer.zero_grad()
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


def train_pack(
    specs: list[TrialSpec],
    data: DatasetTensors,
    device: torch.device,
    on_epoch: PackEpochCallback | None = None,
    on_snapshot: PackSnapshotCallback | None = None,
    resume: PackResume | None = None,
    graphs: bool = True,
) -> list[TrainedNetwork]:
    """Train the networks of ``specs`` together; one :class:`TrainedNetwork` per spec, in order.

    Each result's ``model`` is an ordinary network (its family's module) holding that network's final
    weights, ``checkpoints`` its weights at every checkpoint epoch (as
    :func:`train_network`), and ``train_seconds`` the pack's training wall time
    in this call divided by the number of networks (seconds). ``on_snapshot``,
    ``resume`` and ``graphs`` work as in :func:`train_network`, per network.

    A network whose mean training loss is not finite at an epoch's end (one wait for the device per
    epoch, none per step) has diverged: its ``diverged_epoch`` is set, none of its later weights is
    saved, and the pack goes on for the others. Its slice stays in the stacked step (every network's
    gradient is its own, so its NaNs reach no other network; taking it out would change the others'
    kernels and their resumable state); when every network has diverged, training ends.
    """
    check_pack(specs)
    first = specs[0]
    models = [initial_model(spec, data.input_shape, data.n_classes).to(device) for spec in specs]
    stack = stack_networks(first.model, models)
    optimizer = make_optimizer(first.optimizer, stack.parameters())
    shuffles = [torch.Generator().manual_seed(derive_seed("shuffle", spec.seed)) for spec in specs]
    augments = [augment_generator(spec, device) for spec in specs]
    n_train = data.x_train.shape[0]
    scheduler = make_scheduler(first, optimizer, -(-n_train // first.batch_size))
    if resume is None:
        first_epoch, checkpoints = 1, [{0: snapshot(model)} for model in models]
        if on_snapshot is not None:
            for k, network in enumerate(checkpoints):
                on_snapshot(k, 0, network[0])
    else:
        stack.load(resume.state.model)
        optimizer.load_state_dict(resume.state.optimizer)
        for shuffle, rng in zip(shuffles, resume.state.shuffle_rng, strict=True):
            shuffle.set_state(rng.clone())  # a view into the stack crashes set_state (torch 2.14)
        if first.augment != "none":
            for augment, rng in zip(augments, resume.state.augment_rng, strict=True):
                augment.set_state(rng.clone())
        if scheduler is not None:
            scheduler.load_state_dict(resume.state.scheduler)
        first_epoch, checkpoints = resume.state.epoch + 1, [dict(s) for s in resume.snapshots]
    diverged: list[int | None] = [None] * len(specs)
    if resume is not None and resume.state.diverged:
        diverged = list(resume.state.diverged)
    step = training_step(
        partial(pack_step, stack, optimizer, data, precision=first.precision), optimizer, device,
        graphs and graphs_allowed(first),
    )
    started = time.perf_counter()
    with training_precision(first.precision):
        for epoch in range(first_epoch, first.epochs + 1):
            orders = [torch.randperm(n_train, generator=g).to(device) for g in shuffles]
            batches = torch.stack([
                with_draws(order, None if augment is None else epoch_draws(augment, n_train, device))
                for order, augment in zip(orders, augments, strict=True)
            ])
            loss_sums = torch.zeros(len(specs), device=device)
            for start in range(0, n_train, first.batch_size):
                batch = batches[..., start : start + first.batch_size]
                loss_sums += step(batch) * batch.shape[-1]
                if scheduler is not None:
                    scheduler.step()
            losses = (loss_sums / n_train).tolist()  # the epoch's one wait for the device
            diverged = [epoch if was is None and not math.isfinite(loss) else was
                        for was, loss in zip(diverged, losses, strict=True)]
            if all(was is not None for was in diverged):
                break
            if epoch in first.checkpoints:
                for k, network in enumerate(checkpoints):
                    if diverged[k] is None:
                        network[epoch] = stack.state_dict(k)
                        if on_snapshot is not None:
                            on_snapshot(k, epoch, network[epoch])
            if on_epoch is not None:
                rng = torch.stack([shuffle.get_state() for shuffle in shuffles])
                augment_rng = (None if first.augment == "none"
                               else torch.stack([augment.get_state() for augment in augments]))
                state = TrainingState(epoch, stack.stacked_state(), optimizer.state_dict(), rng, augment_rng,
                                      None if scheduler is None else scheduler.state_dict(), tuple(diverged))
                on_epoch(PackEpochEnd(epoch, losses, state, stack))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - started) / len(specs)
    results = []
    for k, (model, network) in enumerate(zip(models, checkpoints, strict=True)):
        model.load_state_dict(stack.state_dict(k))
        results.append(TrainedNetwork(model, network, seconds, diverged[k]))
    return results
