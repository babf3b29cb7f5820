"""Layer-swap variants of a trained network and their test-set evaluation.

Variants are built by reference: a variant is a dict of parameter tensors that
points at the stored checkpoints, replacing one layer's entries. The model is
never copied; evaluation runs it functionally on each dict.

Row semantics (DESIGN.md, swaps table):
- ``none``        layer null, ``epoch`` = checkpoint evaluated (every checkpoint).
- ``reinit``      trained network with ``layer`` reset to checkpoint ``epoch``
                  (every checkpoint before the last).
- ``rerandomize`` trained network with ``layer`` freshly drawn from the init
                  distribution; ``draw`` is the draw index, the draw's seed is
                  ``derive_seed("rerandomize", seed, layer, draw)``; epoch null.
- ``transplant``  epoch-0 network with ``layer`` taken from the last epoch
                  (``epoch`` = donor epoch).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from trainables.models import layer_tensors
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec

StateDict = dict[str, torch.Tensor]
EVAL_BATCH = 4096


@dataclass(frozen=True)
class SwapVariant:
    kind: str
    layer: str | None
    epoch: int | None
    draw: int | None
    params: StateDict


@dataclass(frozen=True)
class Evaluation:
    """Accuracy (fraction correct) and mean cross-entropy over ``n_test`` samples."""

    test_acc: float
    test_loss: float
    n_test: int


def with_layer(base: StateDict, keys: tuple[str, ...], source: StateDict) -> StateDict:
    """``base`` with the entries ``keys`` taken from ``source`` (no tensor is copied)."""
    return {**base, **{key: source[key] for key in keys}}


def fresh_layer(model: nn.Module, layer: str, draw_seed: int, device: torch.device) -> StateDict:
    """A new draw of ``layer``'s parameters from its own init, seeded, drawn on the CPU."""
    module = copy.deepcopy(getattr(model, layer)).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed)
        module.reset_parameters()
    return {f"{layer}.{key}": value.to(device) for key, value in module.state_dict().items()}


def swap_variants(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict]
) -> Iterator[SwapVariant]:
    """Every variant the spec asks for, ``none`` baselines first."""
    last = spec.epochs
    trained, initial = checkpoints[last], checkpoints[0]
    layers = layer_tensors(model)
    device = next(iter(trained.values())).device
    for epoch in spec.checkpoints:
        yield SwapVariant("none", None, epoch, None, checkpoints[epoch])
    for layer, keys in layers.items():
        if "reinit" in spec.swaps:
            for epoch in spec.checkpoints[:-1]:
                yield SwapVariant("reinit", layer, epoch, None, with_layer(trained, keys, checkpoints[epoch]))
        if "rerandomize" in spec.swaps:
            for draw in range(spec.rerandomize_draws):
                drawn = fresh_layer(model, layer, derive_seed("rerandomize", spec.seed, layer, draw), device)
                yield SwapVariant("rerandomize", layer, None, draw, with_layer(trained, keys, drawn))
        if "transplant" in spec.swaps:
            yield SwapVariant("transplant", layer, last, None, with_layer(initial, keys, trained))


@torch.no_grad()
def evaluate(model: nn.Module, params: StateDict, x: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """Run the full test set through ``model`` with ``params`` in place of its own."""
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], EVAL_BATCH):
        xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        logits = functional_call(model, params, (xb,))
        correct += (logits.argmax(dim=1) == yb).sum()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
    n = x.shape[0]
    return Evaluation(int(correct) / n, float(loss_sum) / n, n)
