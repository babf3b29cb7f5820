"""layerswap's trial code against a faithful re-implementation of the seed notebook's loop.

Seed-style loop: torchvision MNIST through a DataLoader with per-sample
``ToTensor`` + ``Normalize`` (batch 256, shuffled, no workers), SGD lr 0.01, and
every swap evaluated on a deep copy of the model through a test DataLoader
(batch 1000, as PyTorch's MNIST example). layerswap: the whole dataset as one
pre-normalised tensor, :func:`train_network` (and :func:`train_pack` with the
automatic pack size), and :func:`evaluate_variants` on variants built by
reference. Both sides start from the same initial weights and use the same
torch thread count.

Training throughput is timed over a fixed number of steps (one full epoch in
the full run). Swap evaluation covers every variant of ``configs/seed.yaml``
(its checkpoints, swap kinds and draws); the checkpoint weights are stand-in
draws, since evaluation time does not depend on their values. The seed-style
side evaluates a sample of the variants in the quick run and is scaled to all
of them. The whole trial is ``configs/seed.yaml``'s epochs at the measured
throughput plus every swap.

    python -m benchmarks.vs_seed [--quick]
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from benchmarks.common import (
    NETWORKS,
    QUICK_STEPS,
    WARMUP_STEPS,
    Mode,
    busy_warning,
    device,
    layerswap_steps,
    mnist,
    network_spec,
    parse_mode,
    publish,
    seed_config,
    seed_swap_keys,
    sweep_pack,
    synchronize,
    table,
)
from benchmarks.notebook_way import SEED_TEST_BATCH, seed_loaders, seed_style_swaps
from trainables.data.datasets import prepare_dataset
from trainables.data.tensors import DatasetTensors
from trainables.measure.swaps import SwapVariant, evaluate_variants, swap_variants
from trainables.models import registry
from trainables.models.family import StateDict
from trainables.spec import TrialSpec
from trainables.train.network import initial_model, snapshot


@dataclass(frozen=True)
class Side:
    """One loop's figures for one network: training throughput and swap evaluation."""

    name: str
    pack: int
    samples_per_second: float
    swap_seconds: float
    swaps_measured: int
    swaps_total: int
    epochs: int
    n_train: int

    @property
    def trial_seconds(self) -> float:
        """``epochs`` epochs at the measured throughput (per network) plus every swap, in seconds."""
        return self.epochs * self.n_train / self.samples_per_second + self.swap_seconds


# --- the seed notebook's loop ---------------------------------------------------------


def seed_style_steps(model: nn.Module, loader: DataLoader, lr: float, steps: int) -> tuple[float, int]:
    """Train ``steps`` minibatches the notebook's way on the model's device; (seconds, samples).

    Each batch is moved to the device as it comes; timed after a short warm-up.
    """
    where = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()

    def run(n_steps: int) -> int:
        samples = 0
        for step, (images, labels) in enumerate(loader):
            if step == n_steps:
                break
            images, labels = images.to(where), labels.to(where)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            samples += len(labels)
        return samples

    run(WARMUP_STEPS)
    synchronize(where)
    started = time.perf_counter()
    samples = run(steps)
    synchronize(where)
    return time.perf_counter() - started, samples


# --- layerswap ------------------------------------------------------------------------


def stand_in_checkpoints(
    spec: TrialSpec, input_shape: tuple[int, ...], n_classes: int, where: torch.device
) -> dict[int, StateDict]:
    """Epoch 0 = the spec's initial weights; later checkpoints = independent draws (timing only)."""
    return {
        epoch: snapshot(
            initial_model(replace(spec, seed=spec.seed + 1000 * epoch), input_shape, n_classes).to(where)
        )
        for epoch in spec.checkpoints
    }


def layerswap_swaps(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], data: DatasetTensors
) -> float:
    """Seconds to build and evaluate every variant."""
    started = time.perf_counter()
    variants = list(swap_variants(spec, model, checkpoints, seed_swap_keys(spec, model)))
    evaluate_variants(registry.family(spec.model), model, variants, data.x_test, data.y_test)
    synchronize(data.x_test.device)
    return time.perf_counter() - started


# --- the comparison -------------------------------------------------------------------


def sample(variants: list[SwapVariant], count: int) -> list[SwapVariant]:
    """``count`` variants spread evenly over the list (so every kind is represented)."""
    if count >= len(variants):
        return variants
    step = len(variants) / count
    return [variants[int(i * step)] for i in range(count)]


def compare(name: str, widths: tuple[int, ...], data: DatasetTensors, mode: Mode) -> list[Side]:
    spec = network_spec(widths)
    n_train = data.x_train.shape[0]
    steps = mode.pick(QUICK_STEPS[name], math.ceil(n_train / spec.batch_size))
    train_loader, test_loader = seed_loaders(spec.batch_size)
    where = data.x_train.device
    model = initial_model(spec, data.input_shape, data.n_classes).to(where)
    checkpoints = stand_in_checkpoints(spec, data.input_shape, data.n_classes, where)
    variants = list(swap_variants(spec, model, checkpoints, seed_swap_keys(spec, model)))
    seed_sample = sample(variants, mode.pick(3, len(variants)))

    seconds, samples = seed_style_steps(copy.deepcopy(model), train_loader, spec.optimizer.lr, steps)
    seed_swap_seconds = seed_style_swaps(model, seed_sample, test_loader) * len(variants) / len(seed_sample)
    common = {"epochs": spec.epochs, "n_train": n_train, "swaps_total": len(variants)}
    sides = [Side("seed-style", 1, samples / seconds, seed_swap_seconds, len(seed_sample), **common)]

    swap_seconds = layerswap_swaps(spec, model, checkpoints, data)
    for pack in sorted({1, sweep_pack(widths, where)}):
        rate = layerswap_steps(spec, data, steps, pack)
        label = "layerswap" if pack == 1 else f"layerswap pack={pack}"
        sides.append(Side(label, pack, rate, swap_seconds, len(variants), **common))
    print(f"  {name}: done", flush=True)
    return sides


def rows(name: str, sides: list[Side]) -> list[list[Any]]:
    seed = sides[0]
    return [
        [
            name, side.name, side.samples_per_second, side.samples_per_second / seed.samples_per_second,
            side.swap_seconds, side.trial_seconds, seed.trial_seconds / side.trial_seconds,
        ]
        for side in sides
    ]


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    prepare_dataset("mnist")
    data = mnist(device())
    config = seed_config()
    results = {name: compare(name, widths, data, mode) for name, widths in NETWORKS.items()}
    headers = [
        "network", "loop", "train samples/s", "x seed", "swap eval s",
        f"trial s ({config.epochs} ep + swaps)", "x seed",
    ]
    text = table(headers, [row for name, sides in results.items() for row in rows(name, sides)])
    seed_side = results["small"][0]
    text += (
        f"\nswaps: {seed_side.swaps_total} variants per network (configs/seed.yaml: checkpoints "
        f"{list(config.checkpoints)}, {', '.join(config.swaps)}), seed-style: {seed_side.swaps_measured} "
        f"of them timed, scaled to all; trial = {config.epochs} epochs at the measured throughput + all "
        "swaps, per network (a pack's samples/s counts all its networks)"
    )
    payload = {
        "config": str(config.name),
        "seed_test_batch": SEED_TEST_BATCH,
        "networks": {
            name: {
                "widths": list(NETWORKS[name]),
                "sides": [
                    {**side.__dict__, "trial_seconds": side.trial_seconds,
                     "train_speedup": side.samples_per_second / sides[0].samples_per_second,
                     "trial_speedup": sides[0].trial_seconds / side.trial_seconds}
                    for side in sides
                ],
            }
            for name, sides in results.items()
        },
    }
    publish("vs_seed", "vs_seed: layerswap against the seed notebook's loop", mode, text, payload, warning)


if __name__ == "__main__":
    main()
