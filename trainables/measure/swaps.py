"""Layer-swap variants of a trained network, and their test-set evaluation.

Variants are built by reference: a variant is a dict of tensors that points
at the stored checkpoints, replacing one layer's entries (its parameters and
running statistics, :attr:`~trainables.models.family.Layer.swapped`). The
model is never copied; evaluation runs it functionally on each dict, in eval
mode (:mod:`trainables.measure.evaluation`).

Row semantics (DESIGN.md, swaps table):
- ``none``        layer null, ``epoch`` = checkpoint evaluated (every checkpoint).
- ``reinit``      trained network with ``layer`` reset to checkpoint ``epoch``
                  (every checkpoint before the last).
- ``rerandomize`` trained network with ``layer`` freshly drawn from the init
                  distribution; ``draw`` is the draw index, the draw's seed is
                  ``derive_seed("rerandomize", seed, layer, draw)``; epoch null.
                  A BatchNorm's affine parameters and running statistics go back
                  to their initial values with the draw.
- ``transplant``  epoch-0 network with ``layer`` taken from checkpoint ``epoch``
                  (the donor; the last epoch in a standard plan).
- ``interpolate`` trained network with ``layer`` set to
                  ``(1-alpha)*theta_epoch + alpha*theta_T`` (``torch.lerp``, exact
                  at both ends: alpha 0 is ``reinit`` to ``epoch``, alpha 1 the
                  trained network), running statistics too; ``epoch`` is 0 in a
                  standard plan.

A group of layers (a residual block, a stage: :mod:`trainables.models.units`) is swapped as one
layer with all its layers' tensors; its fresh draw resets its modules in forward order from one
generator seeded by the group's name.

Which variants are built is given by row keys (:mod:`trainables.plan`), so a
network measured earlier is measured again only for the keys it lacks.
:func:`evaluate_variants` evaluates them all, with the family's fast evaluator
where it has one (the MLP's shares the activations of leading layers that
variants have in common: :mod:`trainables.models.mlp_fast`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainables.measure.evaluation import evaluate_many
from trainables.models import registry
from trainables.models.family import Evaluation, Layer, ModelFamily, StateDict
from trainables.models.units import measured_units
from trainables.plan import SwapKey
from trainables.seeding import derive_seed
from trainables.spec import TrialSpec


@dataclass(frozen=True)
class SwapVariant:
    kind: str
    layer: str | None
    epoch: int | None
    draw: int | None
    params: StateDict
    alpha: float | None = None


def with_layer(base: StateDict, keys: tuple[str, ...], source: StateDict) -> StateDict:
    """``base`` with the entries ``keys`` taken from ``source`` (no tensor is copied)."""
    return {**base, **{key: source[key] for key in keys}}


def reset_layer(model: nn.Module, layer: Layer, seed: int) -> StateDict:
    """The generic fresh draw: ``layer``'s modules reset by their own ``reset_parameters``, seeded,
    on the CPU (a BatchNorm: weight 1, bias 0, running mean 0, variance 1).

    ``model`` may live on any device, the meta device included: only the
    layer's structure is used. The modules are reset in order, from one
    generator seeded with ``seed``.
    """
    modules = [copy.deepcopy(model.get_submodule(path)).to_empty(device="cpu") for path in layer.modules]
    for path, module in zip(layer.modules, modules, strict=True):
        if not hasattr(module, "reset_parameters"):
            raise ValueError(f"rerandomize: module {path!r} ({type(module).__name__}) of layer "
                             f"{layer.name!r} has no reset_parameters to draw it from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in modules:
            module.reset_parameters()
    drawn = {f"{path}.{key}": value for path, module in zip(layer.modules, modules, strict=True)
             for key, value in module.state_dict().items()}
    return {key: drawn[key] for key in layer.keys}


def fresh_layer(
    family: ModelFamily, model: nn.Module, layer: Layer, seed: int, device: torch.device
) -> StateDict:
    """A new draw of ``layer`` (its swapped tensors) on ``device``: the family's own draw, or
    :func:`reset_layer`."""
    drawn = (family.fresh_draw or reset_layer)(model, layer, seed)
    return {key: drawn[key].to(device) for key in layer.swapped}


def interpolated(start: StateDict, end: StateDict, keys: tuple[str, ...], alpha: float) -> StateDict:
    """``torch.lerp(start, end, alpha)`` of each floating-point tensor of ``keys``; ``end``'s of the rest."""
    return {
        key: torch.lerp(start[key], end[key], alpha) if end[key].is_floating_point() else end[key]
        for key in keys
    }


def swap_variants(
    spec: TrialSpec, model: nn.Module, checkpoints: dict[int, StateDict], keys: Sequence[SwapKey]
) -> Iterator[SwapVariant]:
    """The variant of each key (see :func:`trainables.plan.plan_keys`), in order, with the
    stored running statistics (:mod:`trainables.measure.recalibrate` re-estimates them). A key's
    layer may name a group: its layers are swapped together."""
    family = registry.family(spec.model)
    trained, initial = checkpoints[spec.epochs], checkpoints[0]
    layers = {unit.name: unit for unit in measured_units(family, model)}
    device = next(iter(trained.values())).device
    for kind, name, epoch, alpha, draw, _ in keys:
        if kind == "none":
            yield SwapVariant(kind, None, epoch, None, checkpoints[epoch])
        elif kind == "reinit":
            params = with_layer(trained, layers[name].swapped, checkpoints[epoch])
            yield SwapVariant(kind, name, epoch, None, params)
        elif kind == "rerandomize":
            seed = derive_seed("rerandomize", spec.seed, name, draw)
            drawn = fresh_layer(family, model, layers[name], seed, device)
            yield SwapVariant(kind, name, None, draw, with_layer(trained, layers[name].swapped, drawn))
        elif kind == "transplant":
            params = with_layer(initial, layers[name].swapped, checkpoints[epoch])
            yield SwapVariant(kind, name, epoch, None, params)
        elif kind == "interpolate":
            swapped = layers[name].swapped
            mixed = interpolated(checkpoints[epoch], trained, swapped, alpha)
            yield SwapVariant(kind, name, epoch, None, with_layer(trained, swapped, mixed), alpha)
        else:
            raise ValueError(f"swap kind {kind!r} is not known")


def evaluate_variants(
    family: ModelFamily, model: nn.Module, variants: Sequence[SwapVariant], x: torch.Tensor, y: torch.Tensor
) -> list[Evaluation]:
    """Each variant's test accuracy and loss on (``x``, ``y``), in order
    (:func:`trainables.measure.evaluation.evaluate_many`)."""
    return evaluate_many(family, model, [variant.params for variant in variants], x, y)
