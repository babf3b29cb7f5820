"""What is measured on stored networks: swap kinds and their settings, and the row keys.

A measurement is a fact keyed by (trial_id, kind, layer, epoch, alpha, draw,
recalibrate), determined by the stored weights and the dataset (DESIGN.md, "Identity"). A
plan says which keys a network should have; :func:`plan_keys` lists them, so a
writer can measure only the keys that are not stored yet. Nothing here is part
of a network's identity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EVAL_BATCH = 4096
"""Samples evaluated at once (swap measurement, train accuracy, per-epoch test accuracy)."""

SWAP_KINDS = ("reinit", "rerandomize", "transplant", "interpolate")
"""Swap kinds a plan may ask for; ``none`` (the baselines) is always measured."""

DEFAULT_SWAPS = ("reinit", "rerandomize", "transplant")
"""The kinds a plan measures when none are named."""

ALPHA_DECIMALS = 6
DEFAULT_ALPHAS = tuple(round(i / 10, ALPHA_DECIMALS) for i in range(11))
"""The ``interpolate`` grid: 0, 0.1, ..., 1."""

GROUP_LEVELS = ("layer", "block", "stage")
"""What a plan's ``groups`` may name: single layers, residual blocks, resolution stages
(DESIGN.md, "Layers and layer groups")."""

DEFAULT_GROUPS = ("layer",)
"""Single layers only: what a plan measures when it names no groups."""

SwapKey = tuple[str, str | None, int | None, float | None, int | None, int]
"""(kind, layer, epoch, alpha, draw, recalibrate) of one swaps row of a trial; None = null,
``recalibrate`` 0 = the stored BatchNorm statistics (a row written before v3 has 0)."""


CRITICALITY_SEARCHES = ("bisect", "grid")
"""How criticality finds each alpha's noise scale: bisection in log sigma (default), or the
reference grid of google-research/meta-dataset."""

GRID_ONLY = ("sigmas", "sigma_max")
BISECT_ONLY = ("precision", "rel_sigma_lo", "rel_sigma_hi")
"""Settings that mean something for one search only."""


@dataclass(frozen=True)
class CriticalitySettings:
    """The module-criticality search (DESIGN.md, "Measurements").

    For each of ``alphas`` points in [0, 1], the layer is set to its
    interpolation plus Gaussian noise of std sigma (absolute, on every trainable
    parameter of the layer); a point passes when the mean loss over
    ``noise_samples`` draws on the first ``subset`` training examples is at
    most ``rtol`` times the trained network's loss there.

    ``search`` says which sigmas are tried. ``bisect``: per alpha, the largest
    passing sigma by bisection in log sigma between ``rel_sigma_lo`` and
    ``rel_sigma_hi`` times the RMS of the layer's trained parameters, to a
    relative ``precision`` (the found sigma is within a factor 1 + precision
    below the pass/fail boundary). ``grid``: the reference grid of ``sigmas``
    noise scales ``sigma_max * linspace(1e-16, 1, sigmas)``. Fields the
    search does not use keep their defaults.
    """

    alphas: int = 11
    sigmas: int = 11
    sigma_max: float = 1.0
    noise_samples: int = 10
    rtol: float = 1.01
    subset: int = 10_000
    search: str = "bisect"
    precision: float = 0.05
    rel_sigma_lo: float = 1e-6
    rel_sigma_hi: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The keys this search uses. A grid's dict has no ``search`` key (it is the form every
        grid was recorded in before the bisection existed, so records keep their names)."""
        common = {"alphas": self.alphas, "noise_samples": self.noise_samples, "rtol": self.rtol,
                  "subset": self.subset}
        if self.search == "grid":
            return {"alphas": self.alphas, "sigmas": self.sigmas, "sigma_max": self.sigma_max,
                    **{key: value for key, value in common.items() if key != "alphas"}}
        return {"search": self.search, **common, "precision": self.precision,
                "rel_sigma_lo": self.rel_sigma_lo, "rel_sigma_hi": self.rel_sigma_hi}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriticalitySettings:
        """Settings from :meth:`to_dict` (or a sweep record's config): without ``search``, a dict
        naming the grid's ``sigmas`` or ``sigma_max`` is the grid, any other the bisection."""
        search = implied_search(data)
        defaults = cls()
        common = {
            "alphas": int(data["alphas"]), "noise_samples": int(data["noise_samples"]),
            "rtol": float(data["rtol"]), "subset": int(data["subset"]), "search": search,
        }
        if search == "grid":
            return cls(sigmas=int(data["sigmas"]), sigma_max=float(data["sigma_max"]), **common)
        return cls(
            precision=float(data.get("precision", defaults.precision)),
            rel_sigma_lo=float(data.get("rel_sigma_lo", defaults.rel_sigma_lo)),
            rel_sigma_hi=float(data.get("rel_sigma_hi", defaults.rel_sigma_hi)),
            **common,
        )

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> CriticalitySettings:
        """The settings a criticality row was measured under (``subset`` = its ``subset_size``);
        a row without ``search`` (written before the bisection existed) is a grid row."""
        search = row.get("search")
        common = {
            "alphas": int(row["n_alpha"]), "noise_samples": int(row["noise_samples"]),
            "rtol": float(row["rtol"]), "subset": int(row["subset_size"]),
        }
        if not isinstance(search, str) or search == "grid":
            return cls(sigmas=int(row["n_sigma"]), sigma_max=float(row["sigma_max"]), search="grid", **common)
        return cls(
            search=search, precision=float(row["precision"]), rel_sigma_lo=float(row["rel_sigma_lo"]),
            rel_sigma_hi=float(row["rel_sigma_hi"]), **common,
        )

    def key(self, subset_size: int) -> tuple:
        """What tells rows measured under these settings from others, on ``subset_size`` examples:
        (search, n_alpha, n_sigma, sigma_max, precision, rel_sigma_lo, rel_sigma_hi,
        noise_samples, rtol, subset_size), None where the search does not use a setting."""
        grid = self.search == "grid"
        return (
            self.search, self.alphas,
            self.sigmas if grid else None, float(self.sigma_max) if grid else None,
            None if grid else float(self.precision),
            None if grid else float(self.rel_sigma_lo), None if grid else float(self.rel_sigma_hi),
            self.noise_samples, float(self.rtol), subset_size,
        )

    def label(self) -> str:
        """E.g. ``11x11 sigma_max=1 K=10 rtol=1.01 subset=10000`` (grid) or ``bisect 11 alphas
        precision=0.05 sigma=1e-06..1 RMS K=10 rtol=1.01 subset=10000``."""
        tail = f"K={self.noise_samples} rtol={self.rtol:g} subset={self.subset}"
        if self.search == "grid":
            return f"{self.alphas}x{self.sigmas} sigma_max={self.sigma_max:g} {tail}"
        return (
            f"{self.search} {self.alphas} alphas precision={self.precision:g} "
            f"sigma={self.rel_sigma_lo:g}..{self.rel_sigma_hi:g} RMS {tail}"
        )


def implied_search(data: Mapping[str, Any]) -> str:
    """``data``'s ``search``, else ``grid`` if it names a grid-only setting, else ``bisect``."""
    search = data.get("search")
    if search is not None:
        return search
    return "grid" if any(key in data for key in GRID_ONLY) else "bisect"


def alpha_key(alpha: float | None) -> float | None:
    """``alpha`` rounded to ``ALPHA_DECIMALS``: 0.1 * 3 and 0.3 are one key."""
    return None if alpha is None else round(float(alpha), ALPHA_DECIMALS)


@dataclass(frozen=True)
class MeasurementPlan:
    """The swap kinds to measure (``none`` always), ``rerandomize_draws`` per layer, the
    ``interpolate`` ``alphas``, ``criticality`` settings (None = not measured),
    ``recalibrate``: N > 0 measures every key also with each BatchNorm's running statistics
    re-estimated from N training samples (networks with BatchNorm only), 0 = not; and
    ``groups``: the levels of :data:`GROUP_LEVELS` measured, ``layer`` always among them (a
    block or stage of one layer is that layer, measured once)."""

    swaps: tuple[str, ...] = DEFAULT_SWAPS
    rerandomize_draws: int = 1
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    criticality: CriticalitySettings | None = None
    recalibrate: int = 0
    groups: tuple[str, ...] = DEFAULT_GROUPS

    def to_dict(self) -> dict[str, Any]:
        """The plan as a sweep record holds it; ``groups`` only when off its default, so a record
        written before groups existed reads and hashes as it did."""
        plan = {
            "swaps": list(self.swaps),
            "rerandomize_draws": self.rerandomize_draws,
            "alphas": list(self.alphas),
            "criticality": None if self.criticality is None else self.criticality.to_dict(),
            "recalibrate": self.recalibrate,
        }
        if self.groups != DEFAULT_GROUPS:
            plan["groups"] = list(self.groups)
        return plan

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasurementPlan:
        """A plan from :meth:`to_dict` or a sweep record's config (absent keys take defaults)."""
        criticality = data.get("criticality")
        return cls(
            tuple(data["swaps"]),
            int(data.get("rerandomize_draws", 1)),
            tuple(sorted({alpha_key(a) for a in data.get("alphas") or DEFAULT_ALPHAS})),
            None if criticality is None else CriticalitySettings.from_dict(criticality),
            int(data.get("recalibrate") or 0),
            ordered_groups(data.get("groups") or DEFAULT_GROUPS),
        )

    def union(self, other: MeasurementPlan) -> MeasurementPlan:
        """Every kind and alpha either plan measures, with the larger number of draws; the
        criticality settings and recalibration of this plan, else of ``other``; the group levels
        of both."""
        kinds = set(self.swaps) | set(other.swaps)
        return MeasurementPlan(
            tuple(k for k in SWAP_KINDS if k in kinds),
            max(self.rerandomize_draws, other.rerandomize_draws),
            tuple(sorted(set(self.alphas) | set(other.alphas))),
            self.criticality if self.criticality is not None else other.criticality,
            self.recalibrate or other.recalibrate,
            ordered_groups(set(self.groups) | set(other.groups)),
        )


def ordered_groups(levels: Iterable[str]) -> tuple[str, ...]:
    """``levels`` in the order of :data:`GROUP_LEVELS`, ``layer`` first and always there."""
    wanted = set(levels) | {"layer"}
    return tuple(level for level in GROUP_LEVELS if level in wanted)


def plan_keys(
    plan: MeasurementPlan, layers: tuple[str, ...], checkpoints: tuple[int, ...], batchnorm: bool = False
) -> list[SwapKey]:
    """Every key ``plan`` asks for on a network with ``layers`` and ``checkpoints``, in order.

    ``layers`` are the names measured: the network's layers, and its groups where the plan asks
    for them (:func:`trainables.models.units.measured_units`).

    ``none`` at every checkpoint; per layer: ``reinit`` to every checkpoint but
    the last, ``rerandomize`` draws 0..k-1 (epoch null), ``transplant`` from
    the last checkpoint into the epoch-0 network, ``interpolate`` at every
    alpha (epoch 0, the other end of the line). All with ``recalibrate`` 0; and
    where ``plan.recalibrate`` is N > 0 and the network has a BatchNorm
    (``batchnorm``), every key again with ``recalibrate`` N.
    """
    last = checkpoints[-1]
    keys: list[tuple] = [("none", None, epoch, None, None) for epoch in checkpoints]
    for layer in layers:
        if "reinit" in plan.swaps:
            keys += [("reinit", layer, epoch, None, None) for epoch in checkpoints[:-1]]
        if "rerandomize" in plan.swaps:
            keys += [("rerandomize", layer, None, None, draw) for draw in range(plan.rerandomize_draws)]
        if "transplant" in plan.swaps:
            keys.append(("transplant", layer, last, None, None))
        if "interpolate" in plan.swaps:
            keys += [("interpolate", layer, 0, alpha_key(alpha), None) for alpha in plan.alphas]
    settings = (0, plan.recalibrate) if plan.recalibrate and batchnorm else (0,)
    return [(*key, samples) for samples in settings for key in keys]


def row_key(row: dict[str, Any]) -> SwapKey:
    """The key of a swaps row (a dict with the swaps table's columns; a row without
    ``recalibrate``, written before v3, is the key with ``recalibrate`` 0)."""
    return (row["kind"], row["layer"], row["epoch"], alpha_key(row.get("alpha")), row["draw"],
            row.get("recalibrate") or 0)
