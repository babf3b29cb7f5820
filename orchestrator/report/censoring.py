"""Which module-criticality scores are censored: bounds rather than values.

A layer's criticality is the smallest ``(alpha/sigma)^2 * ||theta_T - theta_0||^2``
over the (alpha, sigma) pairs that pass (DESIGN.md, "Measurements"). The
search only sees the sigmas it tries, so:

- a score comes from a sigma that passed, so the true boundary lies at or above
  it and the true criticality at or below the score; when the best sigma sits at
  an end of the range searched (the grid's ``sigma_max`` or a bisection's
  ``sigma_hi`` above, ``sigma_lo`` below: the grid's first sigma, 1e-16 x
  sigma_max, with nothing between it and the next that fails), nothing bounds
  the boundary from that side closely: the score is an upper bound, the true
  criticality is *at most* this;
- when no pair passed (criticality NaN) the true criticality is *at least*
  the largest score the search could show: a lower bound;
- a row whose ``censored`` column says so where no column tells which end is
  censored *at a bound*.

Rows that carry a boolean ``censored`` column (written by the bisection
search) are taken at their word; the columns above only say which way.
:func:`censoring` is the one place that decides it.

Light to import (the verdicts, and so the CLI, use its words): numpy and
pandas are imported by :func:`censoring` itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

RESOLVED = ""
AT_MOST = "at most"
AT_LEAST = "at least"
AT_A_BOUND = "at a bound"
"""Censored, direction unknown: a row that says it is censored where no column says at which end,
or a sum (network criticality) or group of seeds that holds upper and lower bounds at once."""

_TOP_RTOL = 1e-9


def censoring(rows: pd.DataFrame) -> pd.Series:
    """Per criticality row: ``RESOLVED``, ``AT_MOST``, ``AT_LEAST`` or ``AT_A_BOUND`` (see the
    module docstring).

    Uses ``criticality`` and ``sigma_star``, and where present ``sigma_max``, ``sigma_hi``,
    ``sigma_lo`` and a boolean ``censored``.
    """
    import numpy as np
    import pandas as pd

    def _column(name: str) -> pd.Series:
        if name in rows.columns:
            return pd.to_numeric(rows[name], errors="coerce").astype(float)
        return pd.Series(np.nan, index=rows.index)

    criticality = _column("criticality")
    star = _column("sigma_star")
    top = _column("sigma_hi").fillna(_column("sigma_max"))
    bottom = _column("sigma_lo")
    at_top = np.isclose(star, top, rtol=_TOP_RTOL, atol=0.0) & top.notna()
    at_bottom = np.isclose(star, bottom, rtol=_TOP_RTOL, atol=0.0) & bottom.notna()
    none_passed = criticality.isna()
    derived = np.where(none_passed, AT_LEAST, np.where(at_top | at_bottom, AT_MOST, RESOLVED))
    result = pd.Series(derived, index=rows.index, dtype=object)
    if "censored" in rows.columns:
        stated = rows["censored"]
        known = stated.notna()
        said_censored = known & stated.fillna(False).astype(bool)
        result[known & ~said_censored] = RESOLVED
        result[said_censored & (result == RESOLVED)] = AT_A_BOUND
    return result


def combined(values: Iterable[str]) -> str:
    """The censoring of a sum or a summary of several scores: resolved only if all are."""
    kinds = {value for value in values if value}
    if not kinds:
        return RESOLVED
    return kinds.pop() if len(kinds) == 1 else AT_A_BOUND


def bound_sign(kind: str) -> str:
    """``≤ `` for an upper bound, ``≥ `` for a lower bound, nothing otherwise (a prefix to a number)."""
    return {AT_MOST: "≤ ", AT_LEAST: "≥ "}.get(kind, "")
