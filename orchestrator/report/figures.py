"""The data each report figure shows, taken from the stats tables (testable without drawing).

Every figure is built from the stats table (``orchestrator.report.stats``) or
``layer_stats``, so what a figure shows is exactly what the CSV files say.
Accuracies, errors and drops are fractions here; :mod:`orchestrator.report.plots`
draws them in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.report.stats import ConfigView

FULL_MODEL = "full model"
RERANDOMIZE = "rerandomize"


@dataclass(frozen=True, eq=False)
class Heatmap:
    """Mean test error (fraction) per row and column, in the style of Zhang et al. Fig. 1.

    Rows: each layer in depth order, then ``"full model"``. Columns: ``"rerandomize"``
    (when measured), then one per checkpoint ``epochs[i]``.
    Layer row, checkpoint c < last: the trained network with that layer reset to
    its weights at c (``reinit``); c = last: the trained network itself.
    Layer row, rerandomize: the trained network with that layer freshly drawn.
    Full-model row, checkpoint c: the whole network at c (``none``); its
    rerandomize cell is NaN (shown blank): a fresh draw of every layer is just
    another initial network, which the epoch-0 cell already shows.
    NaN = not measured.
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    epochs: tuple[int, ...]
    error: np.ndarray


@dataclass(frozen=True, eq=False)
class Bars:
    """Per-layer mean accuracy with its 95% CI for each of ``kinds`` (NaN = not measured).

    ``mean``, ``low``, ``high`` and ``clipped`` (the interval was cut to [0, 1]) have
    shape (len(kinds), len(layers)). ``trained`` is the trained network's mean accuracy,
    ``chance`` 1/n_classes.
    """

    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    clipped: np.ndarray
    trained: float
    chance: float | None


@dataclass(frozen=True, eq=False)
class DropProfile:
    """Per-layer mean drop (fraction) and its CI for one configuration and one swap.

    ``depth`` is each layer's relative depth, ``layer_index / (n_layers - 1)``:
    0 = first layer, 1 = output layer, so configurations of different depth
    and families line up (evenly spaced over the layers shown where a
    layer's position is not known).
    """

    label: str
    layers: tuple[str, ...]
    depth: np.ndarray
    drop: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True, eq=False)
class Curve:
    """One line of a figure: ``mean`` with its 95% CI (``low``, ``high``; NaN = none) at ``x``."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True, eq=False)
class LogPoints:
    """Criticality per label (a layer, or a configuration): the geometric mean over seeds and its
    back-transformed 95% CI (NaN = none), and each one's censoring
    (:mod:`orchestrator.report.censoring`)."""

    labels: tuple[str, ...]
    geo: np.ndarray
    low: np.ndarray
    high: np.ndarray
    censoring: tuple[str, ...]


BAR_KINDS = ("reinit@0", "transplant")
"""reinit@0: trained net, one layer back to its initial weights;
transplant: initial net, one layer given its trained weights."""


def _acc(row: pd.Series | None) -> tuple[float, float, float, bool]:
    if row is None:
        return (np.nan, np.nan, np.nan, False)
    return (float(row["mean_acc"]), float(row["ci95_low"]), float(row["ci95_high"]),
            bool(row["ci95_clipped"]))


def heatmap_matrix(view: ConfigView) -> Heatmap:
    """The heatmap of one configuration (see ``Heatmap``)."""
    rows, last, layers = view.rows, view.last_epoch, view.layers
    epochs = sorted(
        {int(e) for e in rows.loc[rows["kind"].isin(["none", "reinit"]), "epoch"].dropna()}
    )
    has_rerandomize = view.has(RERANDOMIZE)
    columns = ([RERANDOMIZE] if has_rerandomize else []) + [
        f"epoch {e} (trained)" if e == last else f"epoch {e}" for e in epochs
    ]
    error = np.full((len(layers) + 1, len(columns)), np.nan)
    offset = int(has_rerandomize)
    trained = view.row("none", None, last) if last is not None else None
    for i, layer in enumerate(layers):
        if has_rerandomize:
            error[i, 0] = 1 - _acc(view.row(RERANDOMIZE, layer, None))[0]
        for j, epoch in enumerate(epochs):
            row = trained if epoch == last else view.row("reinit", layer, epoch)
            error[i, offset + j] = 1 - _acc(row)[0]
    for j, epoch in enumerate(epochs):
        error[len(layers), offset + j] = 1 - _acc(view.row("none", None, epoch))[0]
    return Heatmap(tuple(layers) + (FULL_MODEL,), tuple(columns), tuple(epochs), error)


def bar_data(view: ConfigView, chance: float | None) -> Bars:
    """Accuracy of reinit to epoch 0 and of transplant, per layer (see ``Bars``); a kind with no
    measurement at all has no slot."""
    last, layers = view.last_epoch, view.layers
    found = {
        "reinit@0": [_acc(view.row("reinit", layer, 0)) for layer in layers],
        "transplant": [_acc(view.row("transplant", layer, last)) for layer in layers],
    }
    kinds = tuple(kind for kind in BAR_KINDS if any(np.isfinite(v[0]) for v in found[kind]))
    values = np.array([[v[:3] for v in found[kind]] for kind in kinds], dtype=float).reshape(
        len(kinds), len(layers), 3
    )
    clipped = np.array([[v[3] for v in found[kind]] for kind in kinds], dtype=bool).reshape(
        len(kinds), len(layers)
    )
    trained = _acc(view.row("none", None, last))[0] if last is not None else np.nan
    return Bars(
        tuple(layers), kinds, values[..., 0], values[..., 1], values[..., 2], clipped, trained, chance
    )


def relative_depth(n_layers: int) -> np.ndarray:
    """0 for the first layer, 1 for the output layer, evenly spaced between (0 for one layer)."""
    return np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(n_layers)


def drop_profile(view: ConfigView, kind: str, epoch: int | None, label: str) -> DropProfile:
    """Mean drop vs trained of ``kind`` (at ``epoch``) for each layer of one configuration, by
    relative depth (:attr:`ConfigView.by_depth`: no groups)."""
    layers = view.by_depth
    found = [view.row(kind, layer, epoch) for layer in layers]
    values = np.array(
        [
            (np.nan,) * 3
            if row is None
            else (row["mean_drop"], row["drop_ci95_low"], row["drop_ci95_high"])
            for row in found
        ],
        dtype=float,
    ).reshape(len(layers), 3)
    depth = np.array([view.depth.get(layer, np.nan) for layer in layers], dtype=float)
    if not np.isfinite(depth).all():
        depth = relative_depth(len(layers))
    return DropProfile(label, tuple(layers), depth, values[:, 0], values[:, 1], values[:, 2])


def curve(label: str, rows: pd.DataFrame, x: str, mean: str, low: str, high: str) -> Curve:
    """A curve from stats rows, sorted by ``x``."""
    rows = rows.sort_values(x)
    values = [rows[c].to_numpy(dtype=float) for c in (x, mean, low, high)]
    return Curve(label, *values)


def interpolation_curves(view: ConfigView) -> list[Curve]:
    """Accuracy against alpha for each layer with ``interpolate`` rows (fractions)."""
    rows = view.rows[view.rows["kind"] == "interpolate"]
    return [
        curve(layer, rows[rows["layer"] == layer], "alpha", "mean_acc", "ci95_low", "ci95_high")
        for layer in view.layers
        if (rows["layer"] == layer).any()
    ]


def log_points(labels: Sequence[str], rows: Sequence[pd.Series]) -> LogPoints:
    """Criticality ``layer_stats`` rows (one per label) as points of a log-scale figure."""
    def column(name: str) -> np.ndarray:
        return np.array([float(row[name]) for row in rows], dtype=float)

    return LogPoints(tuple(labels), column("geo_mean"), column("geo_ci95_low"), column("geo_ci95_high"),
                     tuple(str(row["censoring"] or "") for row in rows))
