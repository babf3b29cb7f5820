"""Per-layer verdicts, as Zhang et al. mean them, judged on reinit to epoch 0.

- *critical*: the swapped network is near chance: the upper bound of its
  accuracy's 95% CI lies within ``chance_margin`` of 1/n_classes;
- *robust*: the drop's 95% CI lies below ``robust_drop``;
- *sensitive*: not critical, and the drop's 95% CI lies above ``robust_drop``;
- *unclear*: the drop's interval contains ``robust_drop``; and always
  *unclear (n=1)* with fewer than two seeds, where no interval exists.

Thresholds are fractions of accuracy (0.05 = 5 percentage points). A layer
without a reinit@0 row is judged on rerandomize, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.report.document import compact_layers, format_ci, short_sci

if TYPE_CHECKING:
    from orchestrator.report.stats import ConfigView

CRITICAL, SENSITIVE, ROBUST, UNCLEAR = "critical", "sensitive", "robust", "unclear"
DEFAULT_ROBUST_DROP = 0.05
DEFAULT_CHANCE_MARGIN = 0.10


@dataclass(frozen=True)
class Thresholds:
    """``robust_drop`` and ``chance_margin``, both fractions in (0, 1)."""

    robust_drop: float = DEFAULT_ROBUST_DROP
    chance_margin: float = DEFAULT_CHANCE_MARGIN


@dataclass(frozen=True)
class LayerVerdict:
    """The verdict on one layer; ``drop``/``low``/``high`` its drop (fractions), ``acc_*`` its accuracy."""

    layer: str
    verdict: str
    swap: str
    drop: float
    low: float
    high: float
    acc: float
    acc_high: float
    n: int

    @property
    def label(self) -> str:
        """The verdict as the report prints it: ``unclear (n=1)`` for a single seed."""
        return f"{UNCLEAR} (n={self.n})" if self.n < 2 else self.verdict


def judge(drop_low: float, drop_high: float, acc_high: float, n: int, chance: float | None,
          thresholds: Thresholds) -> str:
    """The class of one layer from its intervals (see the module docstring)."""
    if n < 2 or not (math.isfinite(drop_low) and math.isfinite(drop_high)):
        return UNCLEAR
    if chance is not None and acc_high <= chance + thresholds.chance_margin:
        return CRITICAL
    if drop_high < thresholds.robust_drop:
        return ROBUST
    if drop_low > thresholds.robust_drop:
        return SENSITIVE
    return UNCLEAR


def layer_verdicts(view: ConfigView, chance: float | None, thresholds: Thresholds) -> list[LayerVerdict]:
    """One verdict per layer of one configuration (layers without reinit@0 or rerandomize skipped)."""
    verdicts = []
    for layer in view.layers:
        for swap, epoch in (("reinit", 0), ("rerandomize", None)):
            row = view.row(swap, layer, epoch)
            if row is not None:
                break
        else:
            continue
        low, high, n = float(row["drop_ci95_low"]), float(row["drop_ci95_high"]), int(row["n"])
        acc_high = float(row["ci95_high"])
        verdicts.append(
            LayerVerdict(
                layer, judge(low, high, acc_high, n, chance, thresholds), swap, float(row["mean_drop"]),
                low, high, float(row["mean_acc"]), acc_high, n,
            )
        )
    return verdicts


_SWAP_PHRASE = {
    "reinit": ("putting it back to its initial weights", "putting them back to their initial weights"),
    "rerandomize": ("replacing it with a fresh random draw", "replacing them with fresh random draws"),
}


def points(v: LayerVerdict) -> str:
    """The drop as ``mean ± half-width`` in points."""
    return format_ci(v.drop, v.low, v.high, v.n)


def summarize(
    verdicts: Sequence[LayerVerdict], order: Sequence[str], chance: float | None, thresholds: Thresholds
) -> str:
    """Plain words, e.g. "fc1 is critical: putting it back to its initial weights leaves
    32.4 ± 7.7% accuracy, within 10 points of chance; fc2–fc4 are robust"."""
    if not verdicts:
        return "No reinit or rerandomize measurements: no layer can be judged."
    if all(v.n < 2 for v in verdicts):
        return (
            "One seed only: no interval can be estimated, so no layer is judged (unclear (n=1)); "
            "train more seeds of this configuration."
        )
    limit = f"{100 * thresholds.robust_drop:g} points"
    margin = f"{100 * thresholds.chance_margin:g} points"
    by_kind = {k: [v for v in verdicts if v.verdict == k] for k in (CRITICAL, SENSITIVE, ROBUST, UNCLEAR)}
    sentences = []
    chance_text = "" if chance is None else f" ({100 * chance:.1f}%)"
    for v in by_kind[CRITICAL]:  # n >= 2 and chance known, or it would not be critical
        sentences.append(
            f"{v.layer} is critical: {_SWAP_PHRASE[v.swap][0]} leaves {100 * v.acc:.1f} ± "
            f"{100 * (v.acc_high - v.acc):.1f}% accuracy, within {margin} of chance{chance_text}"
        )
    for v in by_kind[SENSITIVE]:
        sentences.append(f"{v.layer} is sensitive: {_SWAP_PHRASE[v.swap][0]} costs {points(v)} points")
    robust = by_kind[ROBUST]
    if robust:
        names = compact_layers([v.layer for v in robust], order)
        verb = "is" if len(robust) == 1 else "are"
        sentences.append(f"{names} {verb} robust (drop's 95% CI below {limit})")
    for v in by_kind[UNCLEAR]:
        if v.n < 2:
            sentences.append(f"{v.layer} is unclear (n={v.n}: one seed, no interval)")
        else:
            sentences.append(f"{v.layer} is unclear (drop {points(v)} points, its 95% CI contains {limit})")
    if not by_kind[CRITICAL]:
        sentences.insert(0, f"No layer is critical (none is within {margin} of chance)")
    return "; ".join(sentences) + "."


def layer_notes(
    verdicts: Sequence[LayerVerdict], moved: Mapping[str, float], criticality: Mapping[str, float]
) -> tuple[str, ...]:
    """Each judged layer's verdict next to its movement and criticality, e.g. "fc1: critical —
    moved 31% from init, criticality 4.2e3"; empty when neither was measured.

    ``moved`` is the mean relative distance to init at the last epoch (a fraction),
    ``criticality`` the mean module criticality, per layer.
    """
    if not moved and not criticality:
        return ()
    notes = []
    for v in verdicts:
        parts = []
        if v.layer in moved and math.isfinite(moved[v.layer]):
            parts.append(f"moved {100 * moved[v.layer]:.0f}% from init")
        if v.layer in criticality:
            parts.append(f"criticality {short_sci(criticality[v.layer])}")
        notes.append(f"{v.layer}: {v.label}" + (f" — {', '.join(parts)}" if parts else ""))
    return tuple(notes)
