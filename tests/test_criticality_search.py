"""The criticality search: the bisection in log sigma against dense sweeps of sigma on real trained
networks (the MLP's fast path and tinybn's generic one), its cost bound, and the grid beside it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from trainables.data.datasets import load_dataset
from trainables.measure.criticality import (
    NoisyLayer,
    layer_criticalities,
    layer_rms,
    noise_loss,
    noise_seed,
    trained_loss,
)
from trainables.measure.sigma_search import bisect_search, largest_passing, log_sigmas
from trainables.models.mlp import FAMILY as MLP_FAMILY
from trainables.plan import CriticalitySettings
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.network import train_network

CPU = torch.device("cpu")
SPEC_MLP = TrialSpec(
    dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(12, 6), seed=5, epochs=10,
    batch_size=64, optimizer=OptimizerSpec("adam", 0.01), checkpoints=(0, 10),
)
SPEC_BN = replace(SPEC_MLP, model="tinybn", widths=(8,), epochs=4, checkpoints=(0, 4))
SUBSET = 128
SETTINGS = CriticalitySettings(alphas=4, noise_samples=3, subset=SUBSET, precision=0.1, rel_sigma_lo=1e-3)
"""A coarser precision and a narrower range than the defaults keep the dense sweeps short."""
DENSE_STEP = 0.02
"""Relative step of the dense sweeps: five times finer than the searched precision."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic").tensors(CPU)


def dense_boundary(loss_at: NoisyLayer, alpha: float, limit: float, sigmas: list[float]) -> int:
    """The last index of ``sigmas`` that passes before the first that fails (-1: the first fails),
    after checking that the passing sigmas are exactly a prefix (the loss grows with sigma)."""
    passed = [loss_at(alpha, sigma) <= limit for sigma in sigmas]
    boundary = passed.index(False) - 1 if False in passed else len(sigmas) - 1
    assert not any(passed[boundary + 1 :]), "the loss is not monotone in sigma under common random numbers"
    return boundary


def check_against_dense_sweeps(spec: TrialSpec, family, data, settings: CriticalitySettings, alphas) -> list:
    """Train ``spec``'s network, run the bisection on every layer and check it against dense sweeps
    of sigma at ``alphas`` (None: at each layer's alpha_star only); returns the layers' results."""
    network = train_network(spec, data, CPU)
    model, initial, trained = network.model, network.checkpoints[0], network.checkpoints[spec.epochs]
    before = {key: value.clone() for key, value in trained.items()}
    x, y = data.x_train[:SUBSET], data.y_train[:SUBSET]
    reference, results = layer_criticalities(family, model, initial, trained, x, y, spec.seed, settings)
    losses = noise_loss(family, model, trained, x, y)
    assert trained_loss(losses, family.layers(model), trained) == reference  # the same loss as the search's
    limit = settings.rtol * reference
    for layer, result in zip(family.layers(model), results, strict=True):
        end = [trained[key] for key in layer.parameters]
        scale = layer_rms(end)
        assert (result.sigma_lo, result.sigma_hi) == pytest.approx(
            (settings.rel_sigma_lo * scale, settings.rel_sigma_hi * scale), rel=1e-12
        )
        generator = torch.Generator().manual_seed(noise_seed(spec.seed, layer.name))
        noise = [torch.randn((settings.noise_samples, *t.shape), generator=generator) for t in end]
        loss_at = NoisyLayer(losses, layer, initial, trained, noise)
        dense = log_sigmas(result.sigma_lo, result.sigma_hi, DENSE_STEP)
        best = math.inf
        for alpha in [result.alpha_star] if alphas is None else alphas:
            j = dense_boundary(loss_at, alpha, limit, dense)
            if alpha == result.alpha_star:  # both bracket one boundary: within the precision of each other
                assert j >= 0 and dense[j] < result.sigma_star * (1 + settings.precision)
                assert result.sigma_star < dense[j] * (1 + DENSE_STEP)
            if j >= 0:
                best = min(best, (alpha / dense[j]) ** 2 * result.sq_dist)
        if alphas is not None:  # the minimum over alphas, within the precision of both sweeps
            assert best / (1 + DENSE_STEP) ** 2 <= result.criticality <= best * (1 + settings.precision) ** 2
        assert result.loss_at_star <= limit and not result.censored
        assert result.criticality == pytest.approx(
            (result.alpha_star / result.sigma_star) ** 2 * result.sq_dist, rel=1e-12
        )
    assert all(torch.equal(before[key], value) for key, value in trained.items())  # nothing written
    return results


def test_the_bisection_finds_what_dense_sweeps_of_sigma_find_on_a_trained_mlp(data):
    alphas = torch.linspace(0, 1, SETTINGS.alphas, dtype=torch.float64).tolist()
    results = check_against_dense_sweeps(SPEC_MLP, MLP_FAMILY, data, SETTINGS, alphas)
    assert [result.layer for result in results] == ["fc1", "fc2", "fc3"]
    bound = 2 + math.ceil(math.log2(len(log_sigmas(1e-3, 1, SETTINGS.precision)) + 1))
    assert all(result.pairs_evaluated <= SETTINGS.alphas * bound - 2 for result in results)


def test_the_bisection_finds_the_dense_sweeps_boundary_through_the_generic_path(tinybn, data):
    results = check_against_dense_sweeps(SPEC_BN, tinybn, data, SETTINGS, None)
    assert [result.layer for result in results] == ["conv", "fc"]


def test_largest_passing_finds_every_boundary_within_its_bound_with_or_without_a_guess():
    top = 284  # 1e-6 .. 1 at 5%
    bound = 2 + math.ceil(math.log2(top + 2))
    for answer in [-1, 0, 1, 7, 141, 283, 284]:
        for floor in (0, 5, 200):
            for guess in (None, -1, 0, answer - 3, answer, answer + 1, top):
                calls = []

                def passes(j: int, answer: int = answer, floor: int = floor, calls: list = calls) -> bool:
                    assert floor <= j <= top and j not in calls
                    calls.append(j)
                    return j <= answer

                found = largest_passing(passes, floor, top, guess)
                assert found == (answer if answer >= floor else floor - 1)
                assert len(calls) <= (bound if guess is not None else bound - 2)
                if guess == answer and answer >= floor:
                    assert len(calls) <= 2  # an answer that did not move costs two evaluations


def test_log_sigmas_span_the_bounds_exactly_in_steps_within_the_precision():
    sigmas = log_sigmas(3e-7, 0.3, 0.05)
    assert (sigmas[0], sigmas[-1], len(sigmas)) == (3e-7, 0.3, 285)
    ratios = [b / a for a, b in zip(sigmas, sigmas[1:], strict=False)]
    assert max(ratios) <= 1.05 and min(ratios) == pytest.approx(max(ratios), rel=1e-9)


def test_a_loss_that_every_alpha_passes_scores_zero_at_alpha_zero_and_costs_little():
    result = bisect_search(lambda alpha, sigma: 1.0, 1.0, 4.0, [0, 0.5, 1], 1e-3, 1.0, 0.05)
    assert (result.criticality, result.alpha_star, result.sigma_star) == (0.0, 0.0, 1.0)
    assert not result.censored  # a score of 0 is exact whatever sigma
    # alpha 1: plain bisection of 144 possible answers (8 probes) to the top; alphas 0.5 and 0 are
    # warm-started there, and one probe confirms it (nothing lies above the top)
    assert result.pairs_evaluated == 8 + 1 + 1
