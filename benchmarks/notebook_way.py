"""The seed notebook's way of running the experiment, re-implemented faithfully for comparisons.

torchvision MNIST through a DataLoader with per-sample ``ToTensor`` + ``Normalize``
(batch 256, shuffled, no workers), plain SGD, a deep copy of the weights at every
checkpoint epoch, and every swap evaluated on a deep copy of the model through a
test DataLoader (batch 1000, as PyTorch's MNIST example). The networks start from
layerswap's initial weights (``initial_model``) and the swapped weights are built by
layerswap's ``swap_variants``: only the loops are the notebook's.

Run as a script it is one whole notebook job, end to end in one process (what
``python -m benchmarks first_result`` times against a layerswap sweep)::

    python -m benchmarks.notebook_way --seeds 4 --epochs 2 --widths 256,128,64,32 \
        --swaps reinit,rerandomize,transplant

It imports torch, torchvision and the few trainables it needs: no Ray, no orchestrator.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from trainables.data.datasets import default_data_root, normalization
from trainables.measure.swaps import SwapVariant, swap_variants
from trainables.models import registry
from trainables.plan import SWAP_KINDS, MeasurementPlan, plan_keys
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.network import initial_model

SEED_TEST_BATCH = 1000
NOTEBOOK_SWAPS = ("reinit", "rerandomize", "transplant")
"""The swap kinds the seed notebook measured (``interpolate`` is layerswap's own)."""


def seed_loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    """torchvision MNIST from the layerswap data root, transformed per sample as in the notebook."""
    mean, std = normalization("mnist")
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((mean,), (std,))]
    )
    root = str(default_data_root())
    train = torchvision.datasets.MNIST(root, train=True, download=False, transform=transform)
    test = torchvision.datasets.MNIST(root, train=False, download=False, transform=transform)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=0),
        DataLoader(test, batch_size=SEED_TEST_BATCH, shuffle=False, num_workers=0),
    )


@torch.no_grad()
def seed_style_evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Test accuracy and mean loss through the test DataLoader, as the notebook evaluates."""
    where = next(model.parameters()).device
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    for images, labels in loader:
        images, labels = images.to(where), labels.to(where)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        n += len(labels)
    return correct / n, loss_sum / n


def seed_style_swaps(model: nn.Module, variants: list[SwapVariant], loader: DataLoader) -> float:
    """Seconds to evaluate ``variants``, each on a deep copy of the model holding its weights."""
    started = time.perf_counter()
    for variant in variants:
        swapped = copy.deepcopy(model)
        swapped.load_state_dict(variant.params)
        seed_style_evaluate(swapped, loader)
    return time.perf_counter() - started


def seed_style_train(spec: TrialSpec, loader: DataLoader) -> tuple[nn.Module, dict[int, dict]]:
    """Train ``spec`` the notebook's way on the CPU; the model and a deep copy of its weights at
    every checkpoint epoch (epoch 0 = the initial weights)."""
    model = initial_model(spec, (28 * 28,), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr)
    checkpoints = {0: copy.deepcopy(model.state_dict())}
    for epoch in range(1, spec.epochs + 1):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        if epoch in spec.checkpoints:
            checkpoints[epoch] = copy.deepcopy(model.state_dict())
    return model, checkpoints


def notebook_job(seeds: int, epochs: int, widths: tuple[int, ...], swaps: tuple[str, ...] = NOTEBOOK_SWAPS,
                 batch_size: int = 256, lr: float = 0.01) -> list[float]:
    """Train ``seeds`` MLPs of ``widths`` on MNIST for ``epochs`` epochs (checkpoint every epoch)
    and evaluate every swap of the kinds ``swaps`` on each; their trained test accuracies."""
    mean, std = normalization("mnist")
    train_loader, test_loader = seed_loaders(batch_size)
    plan = MeasurementPlan(swaps)
    accuracies = []
    for seed in range(seeds):
        spec = TrialSpec(
            dataset="mnist", data_mean=mean, data_std=std, model="mlp", widths=widths, seed=seed,
            epochs=epochs, batch_size=batch_size, optimizer=OptimizerSpec("sgd", lr),
            checkpoints=tuple(range(epochs + 1)),
        )
        model, checkpoints = seed_style_train(spec, train_loader)
        layers = tuple(layer.name for layer in registry.family(spec.model).layers(model))
        variants = list(swap_variants(spec, model, checkpoints, plan_keys(plan, layers, spec.checkpoints)))
        seed_style_swaps(model, variants, test_loader)
        accuracies.append(seed_style_evaluate(model, test_loader)[0])
        print(f"seed {seed}: test_acc {accuracies[-1]:.4f}, {len(variants)} swapped networks evaluated",
              flush=True)
    return accuracies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--widths", default="256,128,64,32", help="hidden widths, comma-separated")
    parser.add_argument("--swaps", default=",".join(NOTEBOOK_SWAPS),
                        help=f"swap kinds, comma-separated, of {', '.join(SWAP_KINDS)}")
    args = parser.parse_args(argv)
    swaps = tuple(kind for kind in SWAP_KINDS if kind in args.swaps.split(","))
    notebook_job(args.seeds, args.epochs, tuple(int(w) for w in args.widths.split(",")), swaps)


if __name__ == "__main__":
    main()
