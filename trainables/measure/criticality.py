"""Module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020) of each layer of a trained network.

For layer l with initial and trained parameters theta_0, theta_T, and a grid
of alpha in [0, 1] and sigma in (0, sigma_max] (:class:`CriticalitySettings`),
the layer's trainable parameters are set to ``lerp(theta_0, theta_T, alpha) +
sigma * Z`` with the rest of the network trained (the layer's running
statistics, if any, interpolated with alpha, no noise). The pair passes when
the mean cross-entropy over ``noise_samples`` draws of Z, on the first
``subset`` training examples, evaluated in eval mode, is at most ``rtol``
times the trained network's loss there. The layer's criticality is the
minimum over passing pairs of ``(alpha / sigma)^2 * ||theta_T - theta_0||^2``
(squared Frobenius norm over all its trainable parameters); a network's is
the sum over its layers. This follows google-research/meta-dataset
``meta_dataset/analysis/criticality.py`` (alphas ``linspace(0, 1, n)``,
sigmas ``sigma_max * linspace(1e-16, 1, n)``).

Two choices made here, both exact with respect to that definition:

- Pairs are evaluated in increasing order of their score (ties: smaller
  alpha, then smaller sigma) and the search stops at the first pair that
  passes: no pair after it can lower the minimum. A layer that is robust
  stops after a few points; one that passes only at alpha = 1 evaluates
  nearly the whole grid.
- Z is drawn once per layer (``noise_samples`` standard-normal copies of
  each of the layer's parameters, in the layer's order, from one generator
  seeded by ``noise_seed`` = ``derive_seed("criticality", seed, layer)``) and
  scaled by each sigma: common random numbers across the grid, so the answer
  is reproducible and a grid point's pass/fail does not hinge on a lucky draw
  that the neighbouring point did not get.

The loss of the K noise samples of one (alpha, sigma) point is the family's
fast path where it has one (the MLP's runs them in one batched matmul:
:mod:`trainables.models.mlp_fast`), else :class:`FunctionalNoiseLoss`, one
copy at a time through ``functional_call``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from trainables.measure.evaluation import eval_mode
from trainables.measure.swaps import interpolated
from trainables.models.family import Layer, ModelFamily, NoiseLoss, StateDict
from trainables.plan import CriticalitySettings
from trainables.seeding import derive_seed

SUBSET_BATCH = 1024
"""Training examples per forward pass (times ``noise_samples`` copies on the MLP's fast path)."""


@dataclass(frozen=True)
class LayerCriticality:
    """One layer's answer; ``criticality`` and the ``*_star`` fields are NaN when no pair passed."""

    layer: str
    criticality: float
    alpha_star: float
    sigma_star: float
    loss_at_star: float
    sq_dist: float
    pairs_evaluated: int
    seconds: float


def alpha_grid(settings: CriticalitySettings) -> list[float]:
    return torch.linspace(0, 1, settings.alphas, dtype=torch.float64).tolist()


def sigma_grid(settings: CriticalitySettings) -> list[float]:
    return (settings.sigma_max * torch.linspace(1e-16, 1, settings.sigmas, dtype=torch.float64)).tolist()


def noise_seed(seed: int, layer: str) -> int:
    return derive_seed("criticality", seed, layer)


class FunctionalNoiseLoss:
    """The generic noise loss: each of the K copies in turn, through ``functional_call`` in eval mode."""

    def __init__(
        self, model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> None:
        self.model, self.trained, self.x, self.y, self.batch = model, trained, x, y, batch

    @torch.no_grad()
    def __call__(self, layer: Layer, copies: StateDict, fixed: StateDict) -> float:
        """Mean over the copies of the mean cross-entropy over the subset (see
        :class:`~trainables.models.family.NoiseLoss`)."""
        k = next(iter(copies.values())).shape[0]
        total = torch.zeros((), dtype=torch.float64, device=self.x.device)
        with eval_mode(self.model):
            for sample in range(k):
                params = {**self.trained, **fixed, **{key: stack[sample] for key, stack in copies.items()}}
                for start in range(0, self.x.shape[0], self.batch):
                    logits = functional_call(self.model, params, (self.x[start : start + self.batch],))
                    yb = self.y[start : start + self.batch]
                    total += F.cross_entropy(logits, yb, reduction="sum").double()
        return float(total) / (k * self.x.shape[0])


def noise_loss(
    family: ModelFamily, model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor
) -> NoiseLoss:
    """The family's noise loss on (``x``, ``y``) if it has one, else :class:`FunctionalNoiseLoss`."""
    make = family.noise_loss or FunctionalNoiseLoss
    return make(model, trained, x, y, SUBSET_BATCH)


def trained_loss(losses: NoiseLoss, layers: Sequence[Layer], trained: StateDict) -> float:
    """The trained network's mean cross-entropy: its first layer as the one (unperturbed) copy."""
    first = layers[0]
    copies = {key: trained[key].unsqueeze(0) for key in first.parameters}
    return losses(first, copies, {key: trained[key] for key in first.buffers})


@torch.no_grad()
def layer_criticalities(
    family: ModelFamily,
    model: nn.Module,
    initial: StateDict,
    trained: StateDict,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    settings: CriticalitySettings,
    layers: Sequence[str] | None = None,
) -> tuple[float, list[LayerCriticality]]:
    """The trained loss on (``x``, ``y``) and the criticality of each of ``layers`` (default all).

    ``x``/``y`` are the training subset; ``seed`` is the network's seed (the
    noise of layer l is seeded by :func:`noise_seed`).
    """
    network_layers = family.layers(model)
    by_name = {layer.name: layer for layer in network_layers}
    losses = noise_loss(family, model, trained, x, y)
    reference = trained_loss(losses, network_layers, trained)
    limit = settings.rtol * reference
    alphas, sigmas = alpha_grid(settings), sigma_grid(settings)
    results = []
    for name in layers or by_name:
        started = time.perf_counter()
        layer = by_name[name]
        start = [initial[key] for key in layer.parameters]
        end = [trained[key] for key in layer.parameters]
        sq_dist = float(sum(((t - t0).double() ** 2).sum() for t0, t in zip(start, end, strict=True)))
        generator = torch.Generator().manual_seed(noise_seed(seed, name))
        k = settings.noise_samples
        noise = [torch.randn((k, *t.shape), generator=generator).to(t.device, t.dtype) for t in end]
        pairs = sorted(((alpha / sigma) ** 2 * sq_dist, alpha, sigma) for alpha in alphas for sigma in sigmas)
        found = (float("nan"),) * 4
        evaluated = 0
        for score, alpha, sigma in pairs:
            evaluated += 1
            copies = {
                key: torch.lerp(t0, t, alpha).unsqueeze(0) + sigma * z
                for key, t0, t, z in zip(layer.parameters, start, end, noise, strict=True)
            }
            loss = losses(layer, copies, interpolated(initial, trained, layer.buffers, alpha))
            if loss <= limit:
                found = (score, alpha, sigma, loss)
                break
        results.append(LayerCriticality(name, *found, sq_dist, evaluated, time.perf_counter() - started))
    return reference, results


def criticality_rows(
    trial_id: str,
    seed: int,
    family: ModelFamily,
    model: nn.Module,
    initial: StateDict,
    trained: StateDict,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    settings: CriticalitySettings,
    layers: Sequence[str] | None = None,
) -> list[dict]:
    """The ``criticality`` rows of one network (DESIGN.md columns), on its first ``subset``
    training examples."""
    x, y = x_train[: settings.subset], y_train[: settings.subset]
    reference, results = layer_criticalities(family, model, initial, trained, x, y, seed, settings, layers)
    return [
        {
            "trial_id": trial_id,
            "layer": result.layer,
            "criticality": result.criticality,
            "alpha_star": result.alpha_star,
            "sigma_star": result.sigma_star,
            "loss_at_star": result.loss_at_star,
            "trained_loss": reference,
            "n_alpha": settings.alphas,
            "n_sigma": settings.sigmas,
            "sigma_max": settings.sigma_max,
            "noise_samples": settings.noise_samples,
            "rtol": settings.rtol,
            "subset_size": x.shape[0],
            "noise_seed": noise_seed(seed, result.layer),
            "sq_dist": result.sq_dist,
            "pairs_evaluated": result.pairs_evaluated,
            "seconds": result.seconds,
        }
        for result in results
    ]
