"""Training a pack of K networks of the same widths at once: stacked weights, batched matmul.

Layer ``i`` of every network in the pack is one stacked (transposed) weight
``(K, in, out)`` and one stacked bias ``(K, out)``; each step runs
``torch.baddbmm`` over the K networks' own minibatches. Per network, everything
matches :func:`train_network`:

- initial weights: built by :func:`initial_model` and stacked, so epoch 0 is
  bit-identical to the unpacked network;
- shuffling: its own ``torch.Generator`` seeded with ``derive_seed("shuffle", seed)``
  and one ``randperm`` per epoch, so every minibatch holds the same samples;
- loss: the sum over networks of each network's mean cross-entropy, so each
  network's gradient is its own;
- optimizer: ``torch.optim`` on the stacked tensors; SGD (momentum, weight
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

import torch
from torch import nn
from torch.nn import functional as F

from trainables.datasets import DatasetTensors
from trainables.models import MLP
from trainables.precision import PRECISIONS, precision_context
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec
from trainables.training import (
    StateDict,
    TrainedNetwork,
    TrainingState,
    initial_model,
    make_optimizer,
    snapshot,
)


@dataclass(frozen=True)
class PackEpochEnd:
    """What :func:`train_pack` reports after each epoch.

    ``train_losses`` is each network's mean training loss, in spec order;
    ``state`` is the whole pack's resumable state: ``model`` holds the stacked
    tensors (:meth:`StackedMLP.stacked_state`), ``shuffle_rng`` the K shuffle
    generators' states stacked (K, n).
    """

    epoch: int
    train_losses: list[float]
    state: TrainingState


@dataclass(frozen=True)
class PackResume:
    """Continue a pack from ``state``; ``snapshots[k]`` are network k's checkpoints saved so far."""

    state: TrainingState
    snapshots: list[dict[int, StateDict]]


PackEpochCallback = Callable[[PackEpochEnd], None]
PackSnapshotCallback = Callable[[int, int, StateDict], None]
"""Called with (network index in the pack, epoch, detached copy of its weights) at epoch 0
and each checkpoint epoch."""

SHARED_FIELDS = (
    "dataset", "data_mean", "data_std", "model", "widths", "epochs", "batch_size",
    "optimizer", "checkpoints", "precision",
)
"""Spec fields every network of a pack must share (they differ only in seed and swap plan)."""

FLOAT_BYTES = 4
INDEX_BYTES = 8
CUDA_CONTEXT_BYTES = 768 * 2**20
"""Device memory a CUDA process holds before any tensor (context, cuBLAS workspace), bytes."""

CPU_PACK_STEP_FLOPS = 2.0e9
"""On a CPU, pack networks until one step does about this many matmul FLOPs.

Below it a step pays noticeably for per-operation overhead and thread
wake-ups; above it batching more networks gains nothing
(``python -m benchmarks pack_kernels``).
"""

MAX_PACK = 32
"""Upper bound on an automatic pack: larger packs gain little and lose more on a failure."""

GPU_MEMORY_HEADROOM = 0.8
"""Fraction of a trial's GPU memory budget an automatic pack may plan to use."""


@dataclass
class StackedMLP:
    """The pack's trainable tensors: per layer a transposed stacked weight and a stacked bias.

    ``weights[i]`` is (K, in, out), network k's ``fc{i+1}.weight`` transposed;
    ``biases[i]`` is (K, out). The transposed layout lets ``baddbmm`` run
    without transposes and makes each weight's gradient come out in the
    parameter's own layout, so autograd never copies it (the (K, out, in)
    layout measured 25% slower on the seed network).
    """

    layer_names: tuple[str, ...]
    weights: list[nn.Parameter]
    biases: list[nn.Parameter]

    @classmethod
    def of(cls, models: list[MLP]) -> StackedMLP:
        """The models' weights stacked on their device (copies; the models are left as they are)."""
        names = models[0].layer_names
        layers = [[getattr(model, name) for model in models] for name in names]
        return cls(
            names,
            [nn.Parameter(torch.stack([layer.weight.detach().t() for layer in stack])) for stack in layers],
            [nn.Parameter(torch.stack([layer.bias.detach() for layer in stack])) for stack in layers],
        )

    def parameters(self) -> list[nn.Parameter]:
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, n_classes) of each network on its own batch ``x`` (K, B, in)."""
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight)
            if i < last:
                x = torch.relu(x)
        return x

    def stacked_state(self) -> StateDict:
        """The stacked tensors (live references): ``fcN.weight_t`` (K, in, out), ``fcN.bias`` (K, out)."""
        state: StateDict = {}
        for name, weight, bias in zip(self.layer_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight_t"] = weight.detach()
            state[f"{name}.bias"] = bias.detach()
        return state

    @torch.no_grad()
    def load(self, state: StateDict) -> None:
        """Copy stacked tensors saved from :meth:`stacked_state` into this pack."""
        for key, tensor in self.stacked_state().items():
            tensor.copy_(state[key])

    def state_dict(self, k: int) -> StateDict:
        """Network ``k``'s weights as an MLP state_dict (contiguous detached copies)."""
        state: StateDict = {}
        for name, weight, bias in zip(self.layer_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = weight[k].detach().t().clone(memory_format=torch.contiguous_format)
            state[f"{name}.bias"] = bias[k].detach().clone()
        return state


def network_view(stacked: StateDict, k: int) -> StateDict:
    """Network ``k``'s MLP state_dict as views into :meth:`StackedMLP.stacked_state` tensors."""
    view: StateDict = {}
    for key, tensor in stacked.items():
        if key.endswith(".weight_t"):
            view[key.removesuffix("_t")] = tensor[k].t()
        else:
            view[key] = tensor[k]
    return view


def check_pack(specs: list[TrialSpec]) -> None:
    """ValueError unless ``specs`` are distinct networks sharing every :data:`SHARED_FIELDS` value."""
    if not specs:
        raise ValueError("pack: no specs to train")
    first = specs[0]
    for spec in specs[1:]:
        for field in SHARED_FIELDS:
            if getattr(spec, field) != getattr(first, field):
                raise ValueError(
                    f"pack: {field} differs within a pack ({getattr(first, field)!r} vs "
                    f"{getattr(spec, field)!r}); a pack's networks may differ only in seed"
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
    """Each network's minibatch: features (K, B, D) and labels (K, B) for sample indices (K, B).

    ``index_select`` on the flattened indices: 3-4 times faster on a CPU than
    indexing with a 2-D tensor.
    """
    flat = batch.reshape(-1)
    x = data.x_train.index_select(0, flat).view(*batch.shape, -1)
    return x, data.y_train.index_select(0, flat).view(batch.shape)


def train_pack(
    specs: list[TrialSpec],
    data: DatasetTensors,
    device: torch.device,
    on_epoch: PackEpochCallback | None = None,
    on_snapshot: PackSnapshotCallback | None = None,
    resume: PackResume | None = None,
) -> list[TrainedNetwork]:
    """Train the networks of ``specs`` together; one :class:`TrainedNetwork` per spec, in order.

    Each result's ``model`` is an ordinary MLP holding that network's final
    weights, ``checkpoints`` its weights at every checkpoint epoch (as
    :func:`train_network`), and ``train_seconds`` the pack's training wall time
    in this call divided by the number of networks (seconds). ``on_snapshot``
    and ``resume`` work as in :func:`train_network`, per network.
    """
    check_pack(specs)
    first = specs[0]
    models = [initial_model(spec, data.x_train.shape[1], data.n_classes).to(device) for spec in specs]
    stack = StackedMLP.of(models)
    optimizer = make_optimizer(first.optimizer, stack.parameters())
    shuffles = [torch.Generator().manual_seed(derive_seed("shuffle", spec.seed)) for spec in specs]
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
        first_epoch, checkpoints = resume.state.epoch + 1, [dict(s) for s in resume.snapshots]
    n_train = data.x_train.shape[0]
    started = time.perf_counter()
    for epoch in range(first_epoch, first.epochs + 1):
        orders = torch.stack([torch.randperm(n_train, generator=g) for g in shuffles]).to(device)
        loss_sums = torch.zeros(len(specs), device=device)
        for start in range(0, n_train, first.batch_size):
            batch = orders[:, start : start + first.batch_size]
            x, y = gather(data, batch)
            with precision_context(first.precision, device):
                losses = pack_losses(stack.forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            loss_sums += losses.detach() * batch.shape[1]
        if epoch in first.checkpoints:
            for k, network in enumerate(checkpoints):
                network[epoch] = stack.state_dict(k)
                if on_snapshot is not None:
                    on_snapshot(k, epoch, network[epoch])
        if on_epoch is not None:
            rng = torch.stack([shuffle.get_state() for shuffle in shuffles])
            state = TrainingState(epoch, stack.stacked_state(), optimizer.state_dict(), rng)
            on_epoch(PackEpochEnd(epoch, (loss_sums / n_train).tolist(), state))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - started) / len(specs)
    results = []
    for k, (model, network) in enumerate(zip(models, checkpoints, strict=True)):
        model.load_state_dict(stack.state_dict(k))
        results.append(TrainedNetwork(model, network, seconds))
    return results


# --- memory and pack size -------------------------------------------------------------


def parameter_count(widths: tuple[int, ...], n_features: int, n_classes: int) -> int:
    """Weights and biases of one MLP ``n_features -> widths -> n_classes``."""
    dims = (n_features, *widths, n_classes)
    return sum(i * o + o for i, o in zip(dims[:-1], dims[1:], strict=True))


def step_flops(widths: tuple[int, ...], n_features: int, n_classes: int, batch_size: int) -> int:
    """Matmul FLOPs of one training step of one network (forward, weight and input gradients).

    The first layer needs no input gradient (its input is data), so a weight of
    shape (out, in) costs ``2*B*in*out`` forward, as much for its gradient, and
    as much again for its input's gradient except in the first layer.
    """
    dims = (n_features, *widths, n_classes)
    flops = 0
    for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        passes = 2 if index == 0 else 3
        flops += passes * 2 * batch_size * fan_in * fan_out
    return flops


@dataclass(frozen=True)
class MemoryEstimate:
    """A trial's device memory in bytes: ``shared`` once per trial, ``per_network`` per packed network."""

    shared: int
    per_network: int
    load_transient: int

    def peak(self, pack: int) -> int:
        """Peak bytes of a trial training ``pack`` networks (tensors only, no CUDA context)."""
        return self.shared + max(self.load_transient, pack * self.per_network)


def memory_estimate(
    widths: tuple[int, ...],
    n_features: int,
    n_classes: int,
    n_train: int,
    n_test: int,
    batch_size: int,
    n_checkpoints: int,
    optimizer_slots: int = 2,
    eval_batch: int = 4096,
) -> MemoryEstimate:
    """Upper estimate of a trial's device memory, split into shared and per-network bytes.

    Shared: the dataset (float32 features, int64 labels) and swap evaluation of
    ``eval_batch`` test samples through up to three cached activation paths;
    while the dataset is normalised, one more float32 copy of it exists
    (``load_transient``, before any network). Per network: parameters,
    gradients, ``optimizer_slots`` optimizer tensors (0: plain SGD, 1: SGD with
    momentum, 2: Adam), ``n_checkpoints`` saved copies, its shuffle order, and
    one step's activations (kept for backward, and their gradients).
    """
    params = parameter_count(widths, n_features, n_classes)
    n_samples = n_train + n_test
    units = sum(widths) + n_classes
    data = n_samples * (n_features * FLOAT_BYTES + INDEX_BYTES)
    evaluation = 3 * min(eval_batch, n_test) * (n_features + units) * FLOAT_BYTES
    weights = params * FLOAT_BYTES * (2 + optimizer_slots + n_checkpoints)
    step = batch_size * (n_features + 4 * units) * FLOAT_BYTES + n_train * INDEX_BYTES
    return MemoryEstimate(data + evaluation, weights + step, n_samples * n_features * FLOAT_BYTES)


def estimate_trial_memory_bytes(
    widths: tuple[int, ...],
    n_features: int,
    n_classes: int,
    n_train: int,
    n_test: int,
    batch_size: int,
    pack: int,
    n_checkpoints: int,
    optimizer_slots: int = 2,
) -> int:
    """Peak device memory of one trial training ``pack`` networks, in bytes (see :func:`memory_estimate`).

    Tensors only: on a GPU add :data:`CUDA_CONTEXT_BYTES` per process.
    """
    estimate = memory_estimate(
        widths, n_features, n_classes, n_train, n_test, batch_size, n_checkpoints, optimizer_slots
    )
    return estimate.peak(pack)


def check_memory_fits(estimate_bytes: int, budget_bytes: int, what: str) -> None:
    """ValueError with both figures (GiB) when ``estimate_bytes`` exceeds ``budget_bytes``."""
    if estimate_bytes > budget_bytes:
        raise ValueError(
            f"{what}: needs about {estimate_bytes / 2**30:.2f} GiB of device memory but its "
            f"share is {budget_bytes / 2**30:.2f} GiB; raise resources.gpu_per_trial, lower "
            "pack or batch_size, or use smaller widths"
        )


def default_pack_size(
    widths: tuple[int, ...],
    device: torch.device,
    n_features: int = 784,
    n_classes: int = 10,
    n_train: int = 60_000,
    n_test: int = 10_000,
    batch_size: int = 256,
    n_checkpoints: int = 6,
    gpu_share: float = 1.0,
    threads: int = 1,
) -> int:
    """The automatic K for ``pack: auto``, between 1 and :data:`MAX_PACK`.

    On a CPU: enough networks for one step to reach :data:`CPU_PACK_STEP_FLOPS`
    (small networks gain from amortised overhead, large ones run at K = 1),
    rounded up to a multiple of ``threads`` (the trial's torch threads): a CPU
    ``bmm`` splits the batch of K products among the threads, so an odd K on
    two threads leaves one idle for a while (measured 25% slower).
    On a GPU: as many as fit in :data:`GPU_MEMORY_HEADROOM` of this trial's
    share (``gpu_share`` of the device's total memory, never more than is free
    now) after one CUDA context.
    """
    if device.type != "cuda":
        wanted = math.ceil(CPU_PACK_STEP_FLOPS / step_flops(widths, n_features, n_classes, batch_size))
        if wanted <= 1:
            return 1
        return max(1, min(MAX_PACK // threads * threads, threads * math.ceil(wanted / threads)))
    free, total = torch.cuda.mem_get_info(device)
    budget = min(free, gpu_share * total) * GPU_MEMORY_HEADROOM - CUDA_CONTEXT_BYTES
    estimate = memory_estimate(widths, n_features, n_classes, n_train, n_test, batch_size, n_checkpoints)
    fitting = (budget - estimate.shared) // estimate.per_network
    return max(1, min(MAX_PACK, int(fitting)))
