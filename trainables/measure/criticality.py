"""Module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020) of each layer of a trained MLP.

For layer l with initial and trained parameters theta_0, theta_T, and a grid
of alpha in [0, 1] and sigma in (0, sigma_max] (:class:`CriticalitySettings`),
the layer is set to ``lerp(theta_0, theta_T, alpha) + sigma * Z`` with the
rest of the network trained. The pair passes when the mean cross-entropy over
``noise_samples`` draws of Z, on the first ``subset`` training examples, is at
most ``rtol`` times the trained network's loss there. The layer's criticality
is the minimum over passing pairs of ``(alpha / sigma)^2 * ||theta_T - theta_0||^2``
(squared Frobenius norm over weight and bias); a network's is the sum over
its layers. This follows google-research/meta-dataset
``meta_dataset/analysis/criticality.py`` (alphas ``linspace(0, 1, n)``,
sigmas ``sigma_max * linspace(1e-16, 1, n)``).

Two choices made here, both exact with respect to that definition:

- Pairs are evaluated in increasing order of their score (ties: smaller
  alpha, then smaller sigma) and the search stops at the first pair that
  passes: no pair after it can lower the minimum. A layer that is robust
  stops after a few points; one that passes only at alpha = 1 evaluates
  nearly the whole grid.
- Z is drawn once per layer (``noise_samples`` standard-normal copies of the
  layer, seeded by ``noise_seed`` = ``derive_seed("criticality", seed,
  layer)``) and scaled by each sigma: common random numbers across the grid,
  so the answer is reproducible and a grid point's pass/fail does not hinge
  on a lucky draw that the neighbouring point did not get.

The noise samples of one (alpha, sigma) point run together: the layer's K
perturbed copies are one stacked (K, out, in) tensor applied with
``torch.baddbmm`` to the activations before the layer (computed once per
layer with the trained network), and the later layers run on the (K, batch,
features) result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from trainables.models.mlp import MLP
from trainables.plan import CriticalitySettings
from trainables.seeding import derive_seed

StateDict = dict[str, torch.Tensor]
SUBSET_BATCH = 1024
"""Training examples per forward pass (times ``noise_samples`` copies)."""


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


class _Network:
    """A trained MLP's layers as (weight, bias) pairs, with the loss of a stacked variant of one."""

    def __init__(self, model: MLP, trained: StateDict, x: torch.Tensor, y: torch.Tensor) -> None:
        self.names = model.layer_names
        self.params = [(trained[f"{name}.weight"], trained[f"{name}.bias"]) for name in self.names]
        self.x, self.y = x.flatten(1), y

    def inputs_of(self, index: int) -> torch.Tensor:
        """The activations entering layer ``index`` (trained layers before it), whole subset."""
        h = self.x
        for weight, bias in self.params[:index]:
            h = torch.relu(F.linear(h, weight, bias))
        return h

    def mean_loss(self, index: int, h_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """Mean over the K stacked copies (``weight`` (K, out, in), ``bias`` (K, out)) of layer
        ``index`` of the mean cross-entropy over the subset."""
        k = weight.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=h_in.device)
        transposed = weight.transpose(1, 2)
        for start in range(0, h_in.shape[0], SUBSET_BATCH):
            hb = h_in[start : start + SUBSET_BATCH]
            yb = self.y[start : start + SUBSET_BATCH]
            out = torch.baddbmm(bias.unsqueeze(1), hb.expand(k, *hb.shape), transposed)
            for later_weight, later_bias in self.params[index + 1 :]:
                out = F.linear(torch.relu(out), later_weight, later_bias)
            logits = out.reshape(-1, out.shape[-1])
            total += F.cross_entropy(logits, yb.repeat(k), reduction="sum").double()
        return float(total) / (k * h_in.shape[0])


@torch.no_grad()
def trained_loss(model: MLP, trained: StateDict, x: torch.Tensor, y: torch.Tensor) -> float:
    """The trained network's mean cross-entropy on ``x``, ``y``."""
    network = _Network(model, trained, x, y)
    weight, bias = network.params[0]
    return network.mean_loss(0, network.x, weight.unsqueeze(0), bias.unsqueeze(0))


@torch.no_grad()
def layer_criticalities(
    model: MLP,
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
    if not isinstance(model, MLP):
        raise ValueError(f"criticality: model {type(model).__name__} is not supported (MLP only)")
    network = _Network(model, trained, x, y)
    reference = trained_loss(model, trained, x, y)
    limit = settings.rtol * reference
    alphas, sigmas = alpha_grid(settings), sigma_grid(settings)
    results = []
    for name in layers or network.names:
        started = time.perf_counter()
        index = network.names.index(name)
        w0, b0 = initial[f"{name}.weight"], initial[f"{name}.bias"]
        wt, bt = trained[f"{name}.weight"], trained[f"{name}.bias"]
        sq_dist = float(((wt - w0).double() ** 2).sum() + ((bt - b0).double() ** 2).sum())
        generator = torch.Generator().manual_seed(noise_seed(seed, name))
        k = settings.noise_samples
        zw = torch.randn((k, *wt.shape), generator=generator).to(wt.device, wt.dtype)
        zb = torch.randn((k, *bt.shape), generator=generator).to(bt.device, bt.dtype)
        h_in = network.inputs_of(index)
        pairs = sorted(((alpha / sigma) ** 2 * sq_dist, alpha, sigma) for alpha in alphas for sigma in sigmas)
        found = (float("nan"),) * 4
        evaluated = 0
        for score, alpha, sigma in pairs:
            evaluated += 1
            weight = torch.lerp(w0, wt, alpha).unsqueeze(0) + sigma * zw
            bias = torch.lerp(b0, bt, alpha).unsqueeze(0) + sigma * zb
            loss = network.mean_loss(index, h_in, weight, bias)
            if loss <= limit:
                found = (score, alpha, sigma, loss)
                break
        results.append(LayerCriticality(name, *found, sq_dist, evaluated, time.perf_counter() - started))
    return reference, results


def criticality_rows(
    trial_id: str,
    seed: int,
    model: MLP,
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
    reference, results = layer_criticalities(model, initial, trained, x, y, seed, settings, layers)
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
