"""What is measured on stored networks: swap kinds and their settings, and the row keys.

A measurement is a fact keyed by (trial_id, kind, layer, epoch, alpha, draw),
determined by the stored weights and the dataset (DESIGN.md, "Identity"). A
plan says which keys a network should have; :func:`plan_keys` lists them, so a
writer can measure only the keys that are not stored yet. Nothing here is part
of a network's identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SWAP_KINDS = ("reinit", "rerandomize", "transplant")
"""Swap kinds a plan may ask for; ``none`` (the baselines) is always measured."""

SwapKey = tuple[str, str | None, int | None, float | None, int | None]
"""(kind, layer, epoch, alpha, draw) of one swaps row of a trial; None = null."""


@dataclass(frozen=True)
class MeasurementPlan:
    """The swap kinds to measure (``none`` always) and ``rerandomize_draws`` per layer."""

    swaps: tuple[str, ...] = SWAP_KINDS
    rerandomize_draws: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"swaps": list(self.swaps), "rerandomize_draws": self.rerandomize_draws}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasurementPlan:
        return cls(tuple(data["swaps"]), int(data["rerandomize_draws"]))

    def union(self, other: MeasurementPlan) -> MeasurementPlan:
        """Every kind either plan measures, with the larger number of draws."""
        kinds = set(self.swaps) | set(other.swaps)
        return MeasurementPlan(
            tuple(k for k in SWAP_KINDS if k in kinds), max(self.rerandomize_draws, other.rerandomize_draws)
        )


def plan_keys(plan: MeasurementPlan, layers: tuple[str, ...], checkpoints: tuple[int, ...]) -> list[SwapKey]:
    """Every key ``plan`` asks for on a network with ``layers`` and ``checkpoints``, in order.

    ``none`` at every checkpoint; per layer: ``reinit`` to every checkpoint but
    the last, ``rerandomize`` draws 0..k-1 (epoch null), ``transplant`` from
    the last checkpoint into the epoch-0 network.
    """
    last = checkpoints[-1]
    keys: list[SwapKey] = [("none", None, epoch, None, None) for epoch in checkpoints]
    for layer in layers:
        if "reinit" in plan.swaps:
            keys += [("reinit", layer, epoch, None, None) for epoch in checkpoints[:-1]]
        if "rerandomize" in plan.swaps:
            keys += [("rerandomize", layer, None, None, draw) for draw in range(plan.rerandomize_draws)]
        if "transplant" in plan.swaps:
            keys.append(("transplant", layer, last, None, None))
    return keys


def row_key(row: dict[str, Any]) -> SwapKey:
    """The key of a swaps row (a dict with the swaps table's columns)."""
    alpha = row.get("alpha")
    return (row["kind"], row["layer"], row["epoch"], None if alpha is None else float(alpha), row["draw"])
