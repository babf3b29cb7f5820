"""What a criticality row means beyond its numbers: when its score is censored by the sigmas the
search could try, and how rows written before the search columns existed are read.

A row is **censored** when the sigmas tried do not resolve its score: no alpha passed at any
sigma (``criticality`` NaN: the true one is larger than anything the bounds can show), or the
answer sits at a bound of the search, ``sigma_star`` equal to ``sigma_lo`` or ``sigma_hi``, with
a score above 0 (a score of 0, from ``alpha_star`` = 0 or a layer that never moved, is exact
whatever sigma). A finite censored score is an upper bound: at ``sigma_hi`` the layer may
tolerate more noise than was tried; at the grid's first sigma (1e-16 x sigma_max) the boundary
lies anywhere below the second.

Rows written before the ``search`` column existed are grid rows (the only search there was):
:func:`complete_legacy_rows` reads them as ``search`` = ``grid``, ``sigma_lo`` = 1e-16 x
``sigma_max`` (the grid's first sigma), ``sigma_hi`` = ``sigma_max``, ``censored`` by the rule
above. :meth:`Store.read_index` applies it, so every reader through the store sees them alike;
a script reading the Parquet files itself sees nulls in those columns.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

GRID_FIRST_SIGMA = 1e-16
"""The reference grid's first sigma, as a fraction of sigma_max."""

BOUND_RTOL = 1e-9
"""Relative tolerance of "sigma_star sits at a bound" (both are the same float where written here)."""


def is_censored(criticality: float, sigma_star: float, sigma_lo: float, sigma_hi: float) -> bool:
    """Whether a criticality answer is censored by the bounds ``sigma_lo`` and ``sigma_hi``."""
    if criticality != criticality:  # NaN: no alpha passed
        return True
    at_bound = sigma_star <= sigma_lo * (1 + BOUND_RTOL) or sigma_star >= sigma_hi * (1 - BOUND_RTOL)
    return criticality > 0 and at_bound


def complete_legacy_rows(rows: pa.Table) -> pa.Table:
    """``rows`` (the criticality table's schema) with the search columns of rows written before
    them filled in as described in the module docstring; other rows as they are."""
    legacy = pc.is_null(rows.column("search"))
    if not pc.any(legacy).as_py():
        return rows
    sigma_max = rows.column("sigma_max")
    lo = pc.if_else(legacy, pc.multiply(sigma_max, GRID_FIRST_SIGMA), rows.column("sigma_lo"))
    hi = pc.if_else(legacy, sigma_max, rows.column("sigma_hi"))
    criticality, sigma_star = rows.column("criticality"), rows.column("sigma_star")
    at_bound = pc.or_(
        pc.less_equal(sigma_star, pc.multiply(lo, 1 + BOUND_RTOL)),
        pc.greater_equal(sigma_star, pc.multiply(hi, 1 - BOUND_RTOL)),
    )
    derived = pc.or_(pc.is_nan(criticality), pc.and_(pc.greater(criticality, 0.0), at_bound))
    filled = {
        "search": pc.if_else(legacy, pa.scalar("grid"), rows.column("search")),
        "sigma_lo": lo,
        "sigma_hi": hi,
        "censored": pc.if_else(legacy, derived, rows.column("censored")),
    }
    for name, column in filled.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    return rows
