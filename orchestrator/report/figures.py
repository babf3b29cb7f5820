"""Report figures: the data each one shows (testable) and its PNG rendering.

Every figure is built from the stats table (``orchestrator.report.stats``), so what a
figure shows is exactly what ``stats.csv`` says. Rendering uses matplotlib's
object API with the Agg canvas (no pyplot, no display). Accuracies and errors
are fractions in the data and percent on the figures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.report.layer_axis import LABEL_PT, bar_axis, heatmap_size
from orchestrator.report.stats import ConfigView

FULL_MODEL = "full model"
RERANDOMIZE = "rerandomize"
DPI = 120


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

    ``mean``, ``low`` and ``high`` have shape (len(kinds), len(layers)).
    ``trained`` is the trained network's mean accuracy, ``chance`` 1/n_classes.
    """

    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
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


BAR_KINDS = ("reinit@0", "transplant")
"""reinit@0: trained net, one layer back to its initial weights;
transplant: initial net, one layer given its trained weights."""


def _acc(row: pd.Series | None) -> tuple[float, float, float]:
    if row is None:
        return (np.nan, np.nan, np.nan)
    return (float(row["mean_acc"]), float(row["ci95_low"]), float(row["ci95_high"]))


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
    """Accuracy of reinit to epoch 0 and of transplant, per layer (see ``Bars``)."""
    last, layers = view.last_epoch, view.layers
    values = np.array(
        [
            [_acc(view.row("reinit", layer, 0)) for layer in layers],
            [_acc(view.row("transplant", layer, last)) for layer in layers],
        ]
    ).reshape(len(BAR_KINDS), len(layers), 3)
    trained = _acc(view.row("none", None, last))[0] if last is not None else np.nan
    return Bars(
        tuple(layers), BAR_KINDS, values[..., 0], values[..., 1], values[..., 2], trained, chance
    )


def relative_depth(n_layers: int) -> np.ndarray:
    """0 for the first layer, 1 for the output layer, evenly spaced between (0 for one layer)."""
    return np.linspace(0.0, 1.0, n_layers) if n_layers > 1 else np.zeros(n_layers)


def drop_profile(view: ConfigView, kind: str, epoch: int | None, label: str) -> DropProfile:
    """Mean drop vs trained of ``kind`` (at ``epoch``) for each layer of one configuration."""
    layers = view.layers
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


def to_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def plot_heatmap(heatmap: Heatmap, title: str) -> Figure:
    """Cells colored and labelled with the mean test error in percent; blank = not measured.

    Every heatmap uses the same colour scale, 0-100% error, so figures compare. The
    figure grows with its rows (:func:`orchestrator.report.layer_axis.heatmap_size`), so
    every layer keeps a readable label.
    """
    n_rows, n_cols = heatmap.error.shape
    figure = Figure(figsize=heatmap_size(heatmap.rows, n_cols))
    axes = figure.add_subplot()
    cmap = colormaps["RdYlGn_r"].with_extremes(bad="white")
    percent = 100 * heatmap.error
    vmax = 100.0
    image = axes.imshow(np.ma.masked_invalid(percent), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    for (i, j), value in np.ndenumerate(percent):
        if np.isfinite(value):
            dark = not 0.2 <= value / vmax <= 0.8  # both ends of RdYlGn are dark
            color = "white" if dark else "black"
            axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=9, color=color)
    axes.set_xticks(range(n_cols), heatmap.columns, rotation=30, ha="right")
    axes.set_yticks(range(n_rows), heatmap.rows, fontsize=LABEL_PT)
    axes.set_xlabel("layer re-randomized, or reset to its weights at this checkpoint")
    axes.set_ylabel("layer changed")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="mean test error (%)")
    return figure


def plot_bars(bars: Bars, title: str) -> Figure:
    """Grouped bars per layer with 95% CI error bars; trained and chance as reference lines.

    An unmeasured bar (NaN) is absent, not drawn at 0; a bar without an
    interval (n < 2) has no error bar. The figure widens with the layers, their
    labels vertical once they would not fit side by side
    (:func:`orchestrator.report.layer_axis.bar_axis`); the legend sits below them.
    """
    n_layers = len(bars.layers)
    layer_axis = bar_axis(bars.layers)
    figure = Figure(figsize=layer_axis.figure_size(n_layers), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(n_layers)
    width = 0.8 / len(bars.kinds)
    labels = {
        "reinit@0": "trained net, layer reset to init (reinit@0)",
        "transplant": "initial net + this trained layer (transplant)",
    }
    for k, kind in enumerate(bars.kinds):
        measured = np.isfinite(bars.mean[k])
        if not measured.any():
            continue
        mean = 100 * bars.mean[k][measured]
        errors = 100 * np.vstack([bars.mean[k] - bars.low[k], bars.high[k] - bars.mean[k]])[:, measured]
        axes.bar(
            positions[measured] + (k - (len(bars.kinds) - 1) / 2) * width,
            mean,
            width,
            yerr=np.where(np.isfinite(errors), errors, 0.0),
            capsize=4,
            label=labels.get(kind, kind),
        )
    if np.isfinite(bars.trained):
        axes.axhline(100 * bars.trained, color="black", linestyle="--", label="trained network")
    if bars.chance is not None:
        axes.axhline(100 * bars.chance, color="grey", linestyle=":", label="chance (1/n_classes)")
    axes.set_xticks(positions, bars.layers, rotation=layer_axis.rotation, fontsize=LABEL_PT)
    axes.set_xlim(-0.6, n_layers - 0.4)
    axes.set_ylim(0, 105)
    axes.set_xlabel("layer")
    axes.set_ylabel("test accuracy (%), mean ± 95% CI")
    axes.set_title(title, fontsize=10)
    figure.legend(fontsize=8, loc="outside lower center", ncol=2)
    return figure


def plot_drop_profiles(panels: Sequence[tuple[str, Sequence[DropProfile]]], title: str) -> Figure:
    """One panel per swap: drop vs relative depth, one line per configuration."""
    figure = Figure(figsize=(6.0 * len(panels), 4.2))
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (panel_title, profiles) in zip(axes_list, panels, strict=True):
        for profile in profiles:
            errors = 100 * np.vstack([profile.drop - profile.low, profile.high - profile.drop])
            axes.errorbar(
                profile.depth,
                100 * profile.drop,
                yerr=np.where(np.isfinite(errors), errors, 0.0),
                marker="o",
                capsize=3,
                label=profile.label,
            )
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlabel("relative depth (0 = first layer, 1 = output layer)")
        axes.set_ylabel("drop vs trained (points), mean ± 95% CI")
        axes.set_title(panel_title, fontsize=10)
        axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    return figure


@dataclass(frozen=True, eq=False)
class Curve:
    """One line of a figure: ``mean`` with its 95% CI (``low``, ``high``; NaN = none) at ``x``."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


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


def plot_curves(
    curves: Sequence[Curve], title: str, xlabel: str, ylabel: str, scale: float = 1.0, logy: bool = False
) -> Figure:
    """One line per curve with a shaded 95% CI band (no band where n < 2); values times ``scale``."""
    figure = Figure(figsize=(6.0, 4.0))
    axes = figure.add_subplot()
    for c in curves:
        line = axes.plot(c.x, scale * c.mean, marker="o", markersize=3, label=c.label)[0]
        band = np.isfinite(c.low) & np.isfinite(c.high)
        if band.any():
            low = np.maximum(c.low, 1e-300) if logy else c.low
            axes.fill_between(c.x[band], scale * low[band], scale * c.high[band], color=line.get_color(),
                              alpha=0.2, linewidth=0)
    if logy:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure


def plot_log_bars(labels: Sequence[str], mean: np.ndarray, low: np.ndarray, high: np.ndarray,
                  title: str, ylabel: str) -> Figure:
    """Bars on a log scale with 95% CI error bars; a value <= 0 (or NaN) has no bar, only its label.

    A lower CI bound at or below 0 is drawn down to the axis' bottom. The figure widens with
    the labels as the per-layer bars do (:func:`orchestrator.report.layer_axis.bar_axis`).
    """
    layer_axis = bar_axis(labels)
    figure = Figure(figsize=layer_axis.figure_size(len(labels)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(labels))
    shown = np.isfinite(mean) & (mean > 0)
    if shown.any():
        bottom = mean[shown].min() / 100
        below = np.where(np.isfinite(low[shown]) & (low[shown] > bottom), mean[shown] - low[shown],
                         mean[shown] - bottom)
        above = np.where(np.isfinite(high[shown]), high[shown] - mean[shown], 0.0)
        axes.bar(positions[shown], mean[shown], 0.6, yerr=np.vstack([below, above]), capsize=4)
        axes.set_yscale("log")
    for position, value in zip(positions, mean, strict=True):
        if not (np.isfinite(value) and value > 0):
            axes.annotate("0" if value == 0 else "n/a", (position, 0), xycoords=("data", "axes fraction"),
                          ha="center", va="bottom")
    axes.set_xticks(positions, labels, rotation=layer_axis.rotation, fontsize=LABEL_PT)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    return figure


def plot_criticality_vs_gap(points: pd.DataFrame, title: str) -> Figure:
    """One point per configuration: network criticality (log) against the generalisation gap
    (percent), both mean ± 95% CI. ``points`` columns: label, gap, gap_low, gap_high, crit,
    crit_low, crit_high."""
    figure = Figure(figsize=(6.0, 4.2))
    axes = figure.add_subplot()
    for _, p in points.iterrows():
        xerr = 100 * np.array([[p["gap"] - p["gap_low"]], [p["gap_high"] - p["gap"]]])
        yerr = np.array([[p["crit"] - max(p["crit_low"], p["crit"] / 100)], [p["crit_high"] - p["crit"]]])
        axes.errorbar([100 * p["gap"]], [p["crit"]], xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr),
                      marker="o", capsize=3, label=p["label"])
    axes.set_yscale("log")
    axes.set_xlabel("generalisation gap: train minus test accuracy (points), mean ± 95% CI")
    axes.set_ylabel("network criticality (sum over layers)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return figure
