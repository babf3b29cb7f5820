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
- ``transplant``  epoch-0 network with ``layer`` taken from checkpoint ``epoch``
                  (the donor; the last epoch in a standard plan).
- ``interpolate`` trained network with ``layer`` set to
                  ``(1-alpha)*theta_epoch + alpha*theta_T`` (``torch.lerp``, exact
                  at both ends: alpha 0 is ``reinit`` to ``epoch``, alpha 1 the
                  trained network); ``epoch`` is 0 in a standard plan.

Which variants are built is given by row keys (:mod:`trainables.plan`), so a
network measured earlier is measured again only for the keys it lacks.

:func:`evaluate_variants` evaluates many variants of an MLP at once: variants
that share their first layers (the same tensor objects, as built here) share
those layers' activations, computed once per test batch. Every reinit,
rerandomize and interpolate (all alphas) of layer k starts from the trained network's activations before
layer k, every transplant from the initial network's. The arithmetic per
variant is exactly :func:`evaluate`'s, so the results are the same. (Stacking
sibling layers into one wider matmul was measured too: the same FLOPs in
already large products, no gain on a CPU.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from trainables.models.mlp import MLP, layer_tensors
from trainables.plan import SwapKey
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
    alpha: float | None = None


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
    """A new draw of ``layer``'s parameters from its own init, seeded, drawn on the CPU.

    ``model`` may live on any device, the meta device included: only the
    layer's structure is used.
    """
    module = copy.deepcopy(getattr(model, layer)).to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed)
        module.reset_parameters()
    return {f"{layer}.{key}": value.to(device) for key, value in module.state_dict().items()}


def swap_variants(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], keys: Sequence[SwapKey]
) -> Iterator[SwapVariant]:
    """The variant of each key (see :func:`trainables.plan.plan_keys`), in order."""
    trained, initial = checkpoints[spec.epochs], checkpoints[0]
    layers = layer_tensors(model)
    device = next(iter(trained.values())).device
    for kind, layer, epoch, alpha, draw in keys:
        if kind == "none":
            yield SwapVariant(kind, None, epoch, None, checkpoints[epoch])
        elif kind == "reinit":
            params = with_layer(trained, layers[layer], checkpoints[epoch])
            yield SwapVariant(kind, layer, epoch, None, params)
        elif kind == "rerandomize":
            drawn = fresh_layer(model, layer, derive_seed("rerandomize", spec.seed, layer, draw), device)
            yield SwapVariant(kind, layer, None, draw, with_layer(trained, layers[layer], drawn))
        elif kind == "transplant":
            params = with_layer(initial, layers[layer], checkpoints[epoch])
            yield SwapVariant(kind, layer, epoch, None, params)
        elif kind == "interpolate":
            names = layers[layer]
            mixed = {key: torch.lerp(checkpoints[epoch][key], trained[key], alpha) for key in names}
            yield SwapVariant(kind, layer, epoch, None, with_layer(trained, names, mixed), alpha)
        else:
            raise ValueError(f"swap kind {kind!r} is not known")


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


@dataclass
class _LayerNode:
    """One layer's (weight, bias) applied to its parent's output in a tree of variants.

    ``children`` are keyed by the identity of the next layer's tensors;
    ``variants`` lists the indices of the variants whose last layer this is.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    children: dict[tuple[int, int], _LayerNode] = field(default_factory=dict)
    variants: list[int] = field(default_factory=list)


def _variant_tree(
    layer_names: tuple[str, ...], variants: Sequence[SwapVariant]
) -> dict[tuple[int, int], _LayerNode]:
    """Variants as paths of layers, merged where they share the same leading tensors."""
    roots: dict[tuple[int, int], _LayerNode] = {}
    for index, variant in enumerate(variants):
        level = roots
        for name in layer_names:
            weight, bias = variant.params[f"{name}.weight"], variant.params[f"{name}.bias"]
            node = level.setdefault((id(weight), id(bias)), _LayerNode(weight, bias))
            level = node.children
        node.variants.append(index)
    return roots


@torch.no_grad()
def evaluate_variants(
    model: nn.Module, variants: Sequence[SwapVariant], x: torch.Tensor, y: torch.Tensor
) -> list[Evaluation]:
    """:func:`evaluate` of every variant, in order, computing shared leading layers once.

    For an :class:`MLP`, the test set runs in batches of ``EVAL_BATCH`` through
    the tree of variants (:func:`_variant_tree`); other models are evaluated one
    variant at a time.
    """
    if not isinstance(model, MLP):
        return [evaluate(model, variant.params, x, y) for variant in variants]
    roots = _variant_tree(model.layer_names, variants)
    correct = [torch.zeros((), dtype=torch.int64, device=x.device) for _ in variants]
    loss_sum = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in variants]

    def visit(level: dict[tuple[int, int], _LayerNode], h: torch.Tensor, yb: torch.Tensor) -> None:
        for node in level.values():
            out = F.linear(h, node.weight, node.bias)
            if node.children:
                visit(node.children, torch.relu(out), yb)
                continue
            hits = (out.argmax(dim=1) == yb).sum()
            loss = F.cross_entropy(out, yb, reduction="sum").double()
            for index in node.variants:
                correct[index] += hits
                loss_sum[index] += loss

    for start in range(0, x.shape[0], EVAL_BATCH):
        visit(roots, x[start : start + EVAL_BATCH].flatten(1), y[start : start + EVAL_BATCH])
    n = x.shape[0]
    hits = torch.stack(correct).tolist()
    losses = torch.stack(loss_sum).tolist()
    return [Evaluation(c / n, loss / n, n) for c, loss in zip(hits, losses, strict=True)]
