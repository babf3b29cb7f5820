"""Which (alpha, sigma) points module criticality evaluates for one layer, and its answer.

Both searches minimise the score ``(alpha / sigma)^2 * sq_dist`` over the
points that pass (mean noisy loss at most ``limit``), given ``loss_at(alpha,
sigma)``; they differ in the sigmas they can try.

**Grid** (:func:`grid_search`, the reference): every (alpha, sigma) of two
given grids, in increasing order of the score (ties: smaller alpha, then
smaller sigma); the first that passes is the answer, since nothing after it
can score lower.

**Bisection** (:func:`bisect_search`, the default): sigmas are the points
``sigma_lo * r^j``, j = 0..n, evenly spaced in log sigma from ``sigma_lo`` to
``sigma_hi`` with ``r = (sigma_hi / sigma_lo)^(1/n) <= 1 + precision``
(:func:`log_sigmas`). For each alpha, from 1 down to 0, it finds the largest
passing j by bisection, assuming the loss grows with sigma (the caller's
common random numbers make it smooth in sigma), so the boundary lies in
``[sigma_j, sigma_j * r)``: the answer is within the stated precision. Two
things keep it cheap, neither changing the answer:

- only sigmas that would beat the best score so far are searched: the
  smallest such j is probed first, and if it fails this alpha cannot win and
  its search ends there;
- each alpha's bracket is warm-started from its neighbour's answer: that j
  and the one above it (or below) are probed first, so an answer that did not
  move costs two evaluations.

At most ``2 + ceil(log2(n + 2))`` evaluations per alpha (the two warm-start
probes, then plain bisection over the n + 2 possible answers), and ``2`` fewer
for the first alpha: with 11 alphas, precision 0.05 and bounds 1e-6..1
(n = 284) that is at most 119, fewer than the reference grid's 11 x 11 = 121.

:func:`~trainables.store.criticality_rows.is_censored` says when the answer is
not resolved by the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trainables.store.criticality_rows import is_censored

LossAt = Callable[[float, float], float]
"""(alpha, sigma) -> mean loss over the noise draws of the layer at that point."""


@dataclass(frozen=True)
class SearchResult:
    """One layer's answer; ``criticality`` and the ``*_star`` fields are NaN when no point passed.

    ``sigma_lo``/``sigma_hi`` are the smallest and largest sigma the search could try.
    """

    criticality: float
    alpha_star: float
    sigma_star: float
    loss_at_star: float
    sigma_lo: float
    sigma_hi: float
    pairs_evaluated: int

    @property
    def censored(self) -> bool:
        return is_censored(self.criticality, self.sigma_star, self.sigma_lo, self.sigma_hi)


def score(alpha: float, sigma: float, sq_dist: float) -> float:
    """``(alpha / sigma)^2 * sq_dist``: the criticality a passing point gives."""
    return (alpha / sigma) ** 2 * sq_dist


def grid_search(
    loss_at: LossAt, limit: float, sq_dist: float, alphas: Sequence[float], sigmas: Sequence[float]
) -> SearchResult:
    """The reference grid: the lowest-scoring passing pair of ``alphas`` x ``sigmas``."""
    pairs = sorted((score(alpha, sigma, sq_dist), alpha, sigma) for alpha in alphas for sigma in sigmas)
    nan = float("nan")
    for evaluated, (value, alpha, sigma) in enumerate(pairs, start=1):
        loss = loss_at(alpha, sigma)
        if loss <= limit:
            return SearchResult(value, alpha, sigma, loss, min(sigmas), max(sigmas), evaluated)
    return SearchResult(nan, nan, nan, nan, min(sigmas), max(sigmas), len(pairs))


def log_sigmas(sigma_lo: float, sigma_hi: float, precision: float) -> list[float]:
    """Points evenly spaced in log sigma from ``sigma_lo`` to ``sigma_hi`` (both exactly), each at
    most ``1 + precision`` times the one before."""
    ratio = sigma_hi / sigma_lo
    steps = max(1, math.ceil(math.log(ratio) / math.log1p(precision) - 1e-9))
    inner = [sigma_lo * ratio ** (j / steps) for j in range(1, steps)]
    return [sigma_lo, *inner, sigma_hi]


def largest_passing(passes: Callable[[int], bool], floor: int, top: int, guess: int | None) -> int:
    """The largest j in [``floor``, ``top``] with ``passes(j)`` (true up to a j, false above),
    or ``floor - 1`` if none; ``guess`` (the neighbour's answer, if any) is probed first."""
    low, high = floor - 1, top + 1  # passes(low) taken as true, passes(high) as false

    def probe(j: int) -> None:
        nonlocal low, high
        if passes(j):
            low = j
        else:
            high = j

    if guess is not None:
        at = min(max(guess, low), high - 1)
        if at > low:
            probe(at)
        if low == at and at + 1 < high:
            probe(at + 1)
        elif high == at and at - 1 > low:
            probe(at - 1)
    while high - low > 1:
        probe((low + high) // 2)
    return low


def bisect_search(
    loss_at: LossAt,
    limit: float,
    sq_dist: float,
    alphas: Sequence[float],
    sigma_lo: float,
    sigma_hi: float,
    precision: float,
) -> SearchResult:
    """Per alpha (1 down to 0), the largest passing sigma of :func:`log_sigmas` that could beat
    the best score so far; the lowest score found (see the module docstring)."""
    sigmas = log_sigmas(sigma_lo, sigma_hi, precision)
    top = len(sigmas) - 1
    nan = float("nan")
    best = (math.inf, nan, nan, nan)  # score, alpha, sigma, loss
    evaluated = 0
    guess: int | None = None
    for alpha in sorted(alphas, reverse=True):
        losses: dict[int, float] = {}

        def passes(j: int, alpha: float = alpha, losses: dict[int, float] = losses) -> bool:
            nonlocal evaluated
            evaluated += 1
            losses[j] = loss_at(alpha, sigmas[j])
            return losses[j] <= limit

        floor = next((j for j, sigma in enumerate(sigmas) if score(alpha, sigma, sq_dist) < best[0]), top + 1)
        if floor > top:
            continue  # no sigma up to sigma_hi scores below the best: this alpha cannot win
        guess = largest_passing(passes, floor, top, guess)
        if guess >= floor:
            best = (score(alpha, sigmas[guess], sq_dist), alpha, sigmas[guess], losses[guess])
    if best[0] == math.inf:
        return SearchResult(nan, nan, nan, nan, sigma_lo, sigma_hi, evaluated)
    return SearchResult(*best, sigma_lo, sigma_hi, evaluated)
