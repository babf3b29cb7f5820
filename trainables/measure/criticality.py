"""Module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020) of each layer of a trained network.

For layer l with initial and trained parameters theta_0, theta_T, the layer's
trainable parameters are set to ``lerp(theta_0, theta_T, alpha) + sigma * Z``
with the rest of the network trained (the layer's running statistics, if any,
interpolated with alpha, no noise). A point (alpha, sigma) passes when the
mean cross-entropy over ``noise_samples`` draws of Z, on the first ``subset``
training examples, evaluated in eval mode, is at most ``rtol`` times the
trained network's loss there. The layer's criticality is the minimum over
passing points of ``(alpha / sigma)^2 * ||theta_T - theta_0||^2`` (squared
Frobenius norm over all its trainable parameters); a network's is the sum over
its layers. This follows google-research/meta-dataset
``meta_dataset/analysis/criticality.py``.

Which points are tried is the search (:mod:`trainables.measure.sigma_search`):
``bisect`` (default) finds each alpha's largest passing sigma by bisection in
log sigma between ``rel_sigma_lo`` and ``rel_sigma_hi`` times the RMS of the
layer's trained parameters; ``grid`` is the reference grid, alphas
``linspace(0, 1, n)`` and sigmas ``sigma_max * linspace(1e-16, 1, n)``.

Z is drawn once per layer (``noise_samples`` standard-normal copies of each of
the layer's parameters, in the layer's order, from one generator seeded by
``noise_seed`` = ``derive_seed("criticality", seed, layer)``) and scaled by
each sigma: common random numbers across all points, so the answer is
reproducible, the loss is smooth in sigma (which the bisection relies on), and
a point's pass/fail does not hinge on a lucky draw its neighbour did not get.

The loss of the K noise samples of one point is the family's fast path where
it has one (the MLP's runs them in one batched matmul:
:mod:`trainables.models.mlp_fast`), else :class:`FunctionalNoiseLoss` (the K
copies under ``torch.vmap``).
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
from trainables.measure.sigma_search import LossAt, SearchResult, bisect_search, grid_search
from trainables.measure.swaps import interpolated
from trainables.models.family import Layer, ModelFamily, NoiseLoss, StateDict
from trainables.models.units import measured_units
from trainables.plan import CriticalitySettings
from trainables.seeding import derive_seed
from trainables.store.criticality_rows import GRID_FIRST_SIGMA

SUBSET_BATCH = 1024
"""Training examples per forward pass (times ``noise_samples`` copies on the MLP's fast path)."""


@dataclass(frozen=True)
class LayerCriticality:
    """One layer's answer; ``criticality`` and the ``*_star`` fields are NaN when no point passed.

    ``sigma_lo``/``sigma_hi``: the smallest and largest sigma the search could try; ``censored``
    as :func:`~trainables.store.criticality_rows.is_censored` says.
    """

    layer: str
    criticality: float
    alpha_star: float
    sigma_star: float
    loss_at_star: float
    sq_dist: float
    pairs_evaluated: int
    seconds: float
    sigma_lo: float
    sigma_hi: float
    censored: bool


def alpha_grid(settings: CriticalitySettings) -> list[float]:
    return torch.linspace(0, 1, settings.alphas, dtype=torch.float64).tolist()


def sigma_grid(settings: CriticalitySettings) -> list[float]:
    """The reference grid's sigmas (``search: grid``)."""
    grid = torch.linspace(GRID_FIRST_SIGMA, 1, settings.sigmas, dtype=torch.float64)
    return (settings.sigma_max * grid).tolist()


def noise_seed(seed: int, layer: str) -> int:
    return derive_seed("criticality", seed, layer)


class FunctionalNoiseLoss:
    """The generic noise loss, through ``functional_call`` in eval mode, for any family.

    The K copies run under ``torch.vmap`` (:meth:`vmapped`): the layers before the noisy one do
    not depend on the copies, so they run once for all K. The network's first layer has nothing
    to share, and there vmap's batched-weight conv was slower than K plain ones, so it runs the
    copies one at a time (:meth:`one_at_a_time`), as does a layer where vmap cannot batch the
    network (an in-place op that writes batched values into an unbatched tensor, such as a
    residual ``out += shortcut`` whose shortcut is the noisy layer). ``benchmarks/noise_loss.py``
    measures both. Both hold ``batch`` examples x copies in memory at a time.
    """

    def __init__(
        self, model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> None:
        self.model, self.trained, self.x, self.y, self.batch = model, trained, x, y, batch
        self.unbatchable: set[str] = set()
        """Layers where vmap failed: the copies of these run one at a time."""

    @torch.no_grad()
    def __call__(self, layer: Layer, copies: StateDict, fixed: StateDict) -> float:
        """Mean over the copies of the mean cross-entropy over the subset (see
        :class:`~trainables.models.family.NoiseLoss`)."""
        if layer.index > 0 and layer.name not in self.unbatchable:
            try:
                return self.vmapped(copies, fixed)
            except RuntimeError:  # vmap cannot batch the network here: the plain loop can
                self.unbatchable.add(layer.name)
        return self.one_at_a_time(copies, fixed)

    @torch.no_grad()
    def one_at_a_time(self, copies: StateDict, fixed: StateDict) -> float:
        """The K copies in turn, ``batch`` examples per forward."""
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

    @torch.no_grad()
    def vmapped(self, copies: StateDict, fixed: StateDict) -> float:
        """The K copies under ``torch.vmap``, ``batch / K`` examples per forward."""
        k = next(iter(copies.values())).shape[0]
        base = {**self.trained, **fixed}

        def loss(copy: StateDict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            logits = functional_call(self.model, {**base, **copy}, (xb,))
            return F.cross_entropy(logits, yb, reduction="sum")

        losses = torch.vmap(loss, in_dims=(0, None, None))
        step = max(1, self.batch // k)
        total = torch.zeros((), dtype=torch.float64, device=self.x.device)
        with eval_mode(self.model):
            for start in range(0, self.x.shape[0], step):
                per_copy = losses(copies, self.x[start : start + step], self.y[start : start + step])
                total += per_copy.double().sum()
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


@dataclass(frozen=True)
class NoisyLayer:
    """The mean loss of ``layer``'s K noisy copies at (alpha, sigma): its parameters
    ``lerp(initial, trained, alpha) + sigma * noise`` (the same ``noise`` at every point), its
    buffers interpolated with alpha."""

    losses: NoiseLoss
    layer: Layer
    initial: StateDict
    trained: StateDict
    noise: list[torch.Tensor]

    def __call__(self, alpha: float, sigma: float) -> float:
        initial, trained = self.initial, self.trained
        copies = {
            key: torch.lerp(initial[key], trained[key], alpha).unsqueeze(0) + sigma * z
            for key, z in zip(self.layer.parameters, self.noise, strict=True)
        }
        return self.losses(self.layer, copies, interpolated(initial, trained, self.layer.buffers, alpha))


def layer_rms(tensors: Sequence[torch.Tensor]) -> float:
    """The root mean square of every element of ``tensors`` together (the bisection's scale)."""
    n = sum(t.numel() for t in tensors)
    return float(sum((t.double() ** 2).sum() for t in tensors) / n) ** 0.5


def search_layer(
    loss_at: LossAt, limit: float, sq_dist: float, scale: float, settings: CriticalitySettings
) -> SearchResult:
    """``settings``' search for one layer whose trained parameters have RMS ``scale``."""
    alphas = alpha_grid(settings)
    if settings.search == "grid":
        return grid_search(loss_at, limit, sq_dist, alphas, sigma_grid(settings))
    lo, hi = settings.rel_sigma_lo * scale, settings.rel_sigma_hi * scale
    return bisect_search(loss_at, limit, sq_dist, alphas, lo, hi, settings.precision)


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
    """The trained loss on (``x``, ``y``) and the criticality of each of ``layers`` (layer or group
    names, :mod:`trainables.models.units`; default every layer).

    ``x``/``y`` are the training subset; ``seed`` is the network's seed (the
    noise of layer l is seeded by :func:`noise_seed`).
    """
    network_layers = family.layers(model)
    by_name = {unit.name: unit for unit in measured_units(family, model)}
    losses = noise_loss(family, model, trained, x, y)
    reference = trained_loss(losses, network_layers, trained)
    results = []
    for name in layers or [layer.name for layer in network_layers]:
        started = time.perf_counter()
        layer = by_name[name]
        start = [initial[key] for key in layer.parameters]
        end = [trained[key] for key in layer.parameters]
        sq_dist = float(sum(((t - t0).double() ** 2).sum() for t0, t in zip(start, end, strict=True)))
        generator = torch.Generator().manual_seed(noise_seed(seed, name))
        k = settings.noise_samples
        noise = [torch.randn((k, *t.shape), generator=generator).to(t.device, t.dtype) for t in end]
        loss_at = NoisyLayer(losses, layer, initial, trained, noise)
        scale = layer_rms(end) or 1.0  # a layer of zeros: bounds relative to 1
        found = search_layer(loss_at, settings.rtol * reference, sq_dist, scale, settings)
        results.append(
            LayerCriticality(
                name, found.criticality, found.alpha_star, found.sigma_star, found.loss_at_star, sq_dist,
                found.pairs_evaluated, time.perf_counter() - started, found.sigma_lo, found.sigma_hi,
                found.censored,
            )
        )
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
    grid = settings.search == "grid"
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
            "n_sigma": settings.sigmas if grid else None,
            "sigma_max": settings.sigma_max if grid else None,
            "noise_samples": settings.noise_samples,
            "rtol": settings.rtol,
            "subset_size": x.shape[0],
            "noise_seed": noise_seed(seed, result.layer),
            "sq_dist": result.sq_dist,
            "pairs_evaluated": result.pairs_evaluated,
            "seconds": result.seconds,
            "search": settings.search,
            "sigma_lo": result.sigma_lo,
            "sigma_hi": result.sigma_hi,
            "censored": result.censored,
            "precision": None if grid else settings.precision,
            "rel_sigma_lo": None if grid else settings.rel_sigma_lo,
            "rel_sigma_hi": None if grid else settings.rel_sigma_hi,
        }
        for result in results
    ]
