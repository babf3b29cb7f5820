"""Per-layer verdicts, as Zhang et al. mean them, judged on reinit to epoch 0.

- *critical*: the swapped network is near chance: the upper bound of its
  accuracy's 95% CI lies within ``chance_margin`` of 1/n_classes;
- *robust*: the drop's 95% CI lies below ``robust_drop``;
- *sensitive*: not critical, and the drop's 95% CI lies above ``robust_drop``;
- *unclear*: the drop's interval contains ``robust_drop``; and always
  *unclear (n=1)* with fewer than two seeds, where no interval exists.

Thresholds are fractions of accuracy (0.05 = 5 percentage points). A layer
without a reinit@0 row is judged on rerandomize, and says so. Where both were
measured, rerandomize is judged too, and the summary says so when it tells
another story (a layer robust to reinit@0 that a fresh random draw breaks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.report.censoring import bound_sign
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
    acc_low: float
    acc_high: float
    n: int
    drop_clipped: bool = False
    acc_clipped: bool = False

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


def _verdict(layer: str, swap: str, row, chance: float | None, thresholds: Thresholds) -> LayerVerdict:
    low, high, n = float(row["drop_ci95_low"]), float(row["drop_ci95_high"]), int(row["n"])
    acc_high = float(row["ci95_high"])
    return LayerVerdict(
        layer, judge(low, high, acc_high, n, chance, thresholds), swap, float(row["mean_drop"]),
        low, high, float(row["mean_acc"]), float(row["ci95_low"]), acc_high, n,
        bool(row["drop_ci95_clipped"]), bool(row["ci95_clipped"]),
    )


def layer_verdicts(view: ConfigView, chance: float | None, thresholds: Thresholds) -> list[LayerVerdict]:
    """One verdict per layer of one configuration, on reinit@0, else on rerandomize (layers with
    neither skipped)."""
    verdicts = []
    for layer in view.layers:
        for swap, epoch in (("reinit", 0), ("rerandomize", None)):
            row = view.row(swap, layer, epoch)
            if row is not None:
                verdicts.append(_verdict(layer, swap, row, chance, thresholds))
                break
    return verdicts


def rerandomize_verdicts(
    view: ConfigView, chance: float | None, thresholds: Thresholds
) -> dict[str, LayerVerdict]:
    """Per layer with rerandomize rows, its verdict judged on rerandomize alone."""
    rows = {layer: view.row("rerandomize", layer, None) for layer in view.layers}
    return {layer: _verdict(layer, "rerandomize", row, chance, thresholds)
            for layer, row in rows.items() if row is not None}


_SWAP_PHRASE = {
    "reinit": ("putting it back to its initial weights", "putting them back to their initial weights"),
    "rerandomize": ("replacing it with a fresh random draw", "replacing them with fresh random draws"),
}


def points(v: LayerVerdict) -> str:
    """The drop as ``mean ± half-width`` in points."""
    return format_ci(v.drop, v.low, v.high, v.n, clipped=v.drop_clipped)


def accuracy(v: LayerVerdict) -> str:
    """The swapped network's accuracy as ``mean ± half-width%``."""
    return format_ci(v.acc, v.acc_low, v.acc_high, v.n, "%", v.acc_clipped)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def rerandomize_story(
    verdicts: Sequence[LayerVerdict], rerandomized: Mapping[str, LayerVerdict], order: Sequence[str],
    thresholds: Thresholds,
) -> str | None:
    """One sentence for the layers whose verdict on rerandomize tells another story than their
    verdict on reinit@0 (both with n >= 2): one of the two is critical and the other not, or one
    robust and the other sensitive. Grouped by the verdict on rerandomize; None when none does."""
    groups: dict[str, list[tuple[LayerVerdict, LayerVerdict]]] = {}
    for v in verdicts:
        other = rerandomized.get(v.layer)
        judged_both = v.swap == "reinit" and v.n >= 2 and other is not None and other.n >= 2
        pair = {v.verdict, other.verdict} if judged_both else set()
        if len(pair) == 2 and (CRITICAL in pair or pair == {ROBUST, SENSITIVE}):
            groups.setdefault(other.verdict, []).append((v, other))
    if not groups:
        return None
    margin = f"{100 * thresholds.chance_margin:g} points"
    parts = []
    for on_draw, pairs in groups.items():
        names = compact_layers([draw.layer for _, draw in pairs], order)
        verb = "is" if len(pairs) == 1 else "are"
        if on_draw == CRITICAL:
            left = _and([accuracy(d) for _, d in pairs])
            evidence = f"a fresh random draw leaves {left} accuracy, within {margin} of chance"
        else:
            evidence = f"drop {_and([points(d) for _, d in pairs])} points"
        before = _and(list(dict.fromkeys(reinit.verdict for reinit, _ in pairs))).replace(" and ", " or ")
        parts.append(f"{names} {verb} {on_draw} when re-randomized ({evidence}), though {before} on reinit@0")
    ending = ""
    if CRITICAL in groups:
        ending = (" A fresh draw from the same distribution breaks the network more than putting a layer "
                  "back to its own initial weights does.")
    return "Re-randomizing tells another story: " + "; ".join(parts) + "." + ending


def summarize(
    verdicts: Sequence[LayerVerdict], order: Sequence[str], chance: float | None, thresholds: Thresholds,
    rerandomized: Mapping[str, LayerVerdict] | None = None,
) -> str:
    """Plain words, e.g. "fc1 is critical: putting it back to its initial weights leaves
    32.4 ± 7.7% accuracy, within 10 points of chance; fc2–fc4 are robust", then the
    :func:`rerandomize_story` where ``rerandomized`` tells another one."""
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
            f"{v.layer} is critical: {_SWAP_PHRASE[v.swap][0]} leaves {accuracy(v)} accuracy, "
            f"within {margin} of chance{chance_text}"
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
    story = rerandomize_story(verdicts, rerandomized or {}, order, thresholds)
    if not by_kind[CRITICAL]:
        judged_on = " to reinit@0" if story else ""
        sentences.insert(0, f"No layer is critical{judged_on} (none is within {margin} of chance)")
    return "; ".join(sentences) + "." + (f" {story}" if story else "")


def layer_notes(
    verdicts: Sequence[LayerVerdict], moved: Mapping[str, float], criticality: Mapping[str, tuple[float, str]]
) -> tuple[str, ...]:
    """Each judged layer's verdict next to its movement and criticality, e.g. "fc1: critical —
    moved 31% from init, criticality 4.2e3"; empty when neither was measured.

    ``moved`` is the mean relative distance to init at the last epoch (a fraction),
    ``criticality`` the geometric mean of module criticality and its censoring, per layer
    (``criticality ≤ 4.2e3`` for an upper bound).
    """
    if not moved and not criticality:
        return ()
    notes = []
    for v in verdicts:
        parts = []
        if v.layer in moved and math.isfinite(moved[v.layer]):
            parts.append(f"moved {100 * moved[v.layer]:.0f}% from init")
        if v.layer in criticality:
            value, censoring = criticality[v.layer]
            parts.append(f"criticality {bound_sign(censoring)}{short_sci(value)}")
        notes.append(f"{v.layer}: {v.label}" + (f" — {', '.join(parts)}" if parts else ""))
    return tuple(notes)
