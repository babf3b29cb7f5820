"""Drawing the figures along a grid axis (data from :mod:`orchestrator.report.axis_figures`) as PNG.

The rules of :mod:`orchestrator.report.plots` hold: accuracy axes run 0-100% with chance and the
trained network drawn; a layer's curve has its colour from its relative depth (viridis) and a
marker and line style of its own; curves are dodged sideways so whiskers stay apart; censored
criticality is an open marker with an arrow the way the truth lies. The axis' values are the x
ticks: on a log scale (learning rates), a linear one, or as categories (models, precisions).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from orchestrator.catalog.naming import SHORT_NAMES
from orchestrator.report.axis_figures import AxisFigure, AxisNetworkFigure, AxisNetworkPanel, AxisPositions
from orchestrator.report.censoring import AT_LEAST, AT_MOST, RESOLVED
from orchestrator.report.plots import (
    ACCURACY_TOP,
    CHANCE_STYLE,
    DODGE,
    LINE_STYLES,
    MANY_LAYERS,
    MARKERS,
    OKABE_ITO,
    TRAINED_STYLE,
    fitted,
    new_figure,
    set_title,
    whiskers,
)

PANEL_COLUMNS = 3
"""Panels side by side before they wrap to another row."""
PANEL_SIZE = (4.4, 3.4)
"""Inches per panel."""
CATEGORY_DODGE = 0.06
"""Sideways offset between neighbouring curves on a categorical axis, in categories."""
KIND_TITLES = {
    "reinit@0": "layer reset to its initial weights (reinit@0)",
    "rerandomize": "layer re-randomized",
}


def axis_name(key: str) -> str:
    """``optimizer.lr`` -> ``lr (optimizer.lr)``; ``model`` -> ``model``."""
    short = SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])
    return key if short == key else f"{short} ({key})"


def dodged(axis: AxisPositions, x: np.ndarray, index: int, count: int) -> np.ndarray:
    """``x`` moved sideways for the ``index``-th of ``count`` curves (by a share of the axis' span,
    in log space on a log axis)."""
    share = index - (count - 1) / 2
    if axis.scale == "category":
        return x + share * min(CATEGORY_DODGE, 0.6 / max(count, 1))
    if axis.scale == "log":
        values = np.log10([float(v) for v in axis.values])
        return x * 10 ** (share * DODGE * (values.max() - values.min()))
    values = np.array([float(v) for v in axis.values])
    return x + share * DODGE * (values.max() - values.min())


def _axis_ticks(axes, axis: AxisPositions, label: str) -> None:
    if axis.scale == "category":
        axes.set_xticks(range(len(axis.values)), axis.ticks)
        axes.set_xlim(-0.5, len(axis.values) - 0.5)
    else:
        if axis.scale == "log":
            axes.set_xscale("log")
            low, high = float(axis.values[0]), float(axis.values[-1])
            margin = (high / low) ** 0.08
            axes.set_xlim(low / margin, high * margin)
        axes.set_xticks([float(v) for v in axis.values], axis.ticks)
        axes.xaxis.set_minor_locator(NullLocator())  # the values are the ticks
    axes.set_xlabel(label)


def _grid(figure: Figure, panels: int, rows_per_panel: int) -> list[list]:
    """Subplots: ``rows_per_panel`` rows per line of panels, ``PANEL_COLUMNS`` panels per line;
    ``[panel][row]`` -> axes (unused cells hidden)."""
    columns = min(panels, PANEL_COLUMNS)
    lines = math.ceil(panels / columns)
    cells = figure.subplots(lines * rows_per_panel, columns, squeeze=False)
    found = []
    for p in range(panels):
        line, column = divmod(p, columns)
        found.append([cells[line * rows_per_panel + r][column] for r in range(rows_per_panel)])
    for p in range(panels, lines * columns):
        line, column = divmod(p, columns)
        for r in range(rows_per_panel):
            cells[line * rows_per_panel + r][column].set_visible(False)
    return found


def _size(panels: int, rows_per_panel: int) -> tuple[float, float]:
    columns = min(panels, PANEL_COLUMNS)
    lines = math.ceil(panels / columns)
    return (max(6.0, PANEL_SIZE[0] * columns), 1.6 + PANEL_SIZE[1] * rows_per_panel * lines)


def _layer_style(depth: float, index: int) -> dict:
    return {"color": colormaps["viridis"](0.85 * depth), "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}


def plot_axis_layers(figure_data: AxisFigure, title: str) -> Figure:
    """Per-layer accuracy (mean ± 95% CI) against the axis: a row per swap, a column per panel; the
    trained network's accuracy and chance drawn along the axis too. More than ``MANY_LAYERS``
    layers: a depth colour bar instead of a legend of layers, no caps on the whiskers."""
    data, axis = figure_data, figure_data.axis
    n_kinds, n_panels = len(data.kinds), len(data.panels)
    size = _size(n_panels, n_kinds)
    figure = new_figure(*size)
    cells = _grid(figure, n_panels, n_kinds)
    widest = max(data.panels, key=lambda panel: len(panel.layers))
    many = len(widest.layers) > MANY_LAYERS
    for panel, column in zip(data.panels, cells, strict=True):
        for k, (kind, axes) in enumerate(zip(data.kinds, column, strict=True)):
            for i, layer in enumerate(panel.layers):
                measured = np.isfinite(panel.mean[k, i])
                if not measured.any():
                    continue
                mean, low, high = (100 * a[k, i][measured] for a in (panel.mean, panel.low, panel.high))
                x = dodged(axis, panel.x, i, len(panel.layers))[measured]
                axes.errorbar(x, mean, yerr=whiskers(np.vstack([mean - low, high - mean])),
                              capsize=0 if many else 3, markersize=3 if many else 5, label=layer,
                              **_layer_style(float(panel.depth[i]), i))
            if np.isfinite(panel.trained).any():
                axes.plot(panel.x, 100 * panel.trained, label="trained network", **TRAINED_STYLE)
            if np.isfinite(panel.chance).any():
                axes.plot(panel.x, 100 * panel.chance, label="chance (1/n_classes)", **CHANCE_STYLE)
            axes.set_ylim(0, ACCURACY_TOP)
            _axis_ticks(axes, axis, axis_name(axis.key))
            axes.set_ylabel("test accuracy (%), mean ± 95% CI", fontsize=8)
            panel_title = KIND_TITLES.get(kind, kind) + (f" — {panel.title}" if panel.title else "")
            axes.set_title(fitted(panel_title, PANEL_SIZE[0], 9), fontsize=9)
    shared = all(panel.layers == widest.layers for panel in data.panels)
    if not many and not shared:  # a layer's colour is its depth, which differs between the panels
        for panel, column in zip(data.panels, cells, strict=True):
            found = dict(zip(*reversed(column[0].get_legend_handles_labels()), strict=True))
            column[0].legend([found[layer] for layer in panel.layers if layer in found],
                             [layer for layer in panel.layers if layer in found], fontsize=7, loc="best")
    handles, names = _legend_entries(cells, widest, data, layers=shared and not many)
    if many:
        mappable = ScalarMappable(Normalize(0, 1 / 0.85), colormaps["viridis"])  # as _layer_style colours
        bar = figure.colorbar(mappable, ax=[a for column in cells for a in column],
                              label="relative depth of the layer")
        bar.set_ticks([0, 1], labels=["first layer", "output layer"])
    figure.legend(handles, names, fontsize=8, loc="outside lower center", ncol=min(len(names), 6))
    set_title(figure, title, size[0])
    return figure


def _legend_entries(cells: list[list], widest, data: AxisFigure, layers: bool) -> tuple[list, list[str]]:
    """For the figure's legend: the layers of the panel with most of them when ``layers`` (else a
    colour bar or each panel's own legend says them), then the reference lines."""
    found: dict[str, object] = {}
    for column, panel in zip(cells, data.panels, strict=True):
        if panel is widest:
            for axes in column:
                for handle, name in zip(*axes.get_legend_handles_labels(), strict=True):
                    found.setdefault(name, handle)
    shown = [name for name in widest.layers if name in found] if layers else []
    names = shown + [name for name in found if name not in widest.layers]
    return [found[name] for name in names], names


_CENSORED = {AT_MOST: "censored: an upper bound", AT_LEAST: "censored: a lower bound (or none passed)"}


def _criticality_axes(axes, axis: AxisPositions, panel: AxisNetworkPanel) -> set[str]:
    """Network criticality along the axis on a log scale; the censoring kinds drawn."""
    points = panel.criticality
    assert points is not None
    shown = np.isfinite(points.geo) & (points.geo > 0)
    kinds = set()
    if shown.any():
        axes.plot(panel.x[shown], points.geo[shown], color=OKABE_ITO[0], linewidth=1.0)
        span = np.max(points.geo[shown]) / np.min(points.geo[shown])
        arrow = max(span, 10.0) ** 0.12
        for i in np.flatnonzero(shown):
            geo, low, high, kind = points.geo[i], points.low[i], points.high[i], points.censoring[i]
            if np.isfinite(low) and np.isfinite(high):
                axes.errorbar([panel.x[i]], [geo], yerr=whiskers(np.array([[geo - low], [high - geo]])),
                              color=OKABE_ITO[0], capsize=3)
            axes.plot([panel.x[i]], [geo], marker="o", markersize=7, color=OKABE_ITO[0], linestyle="none",
                      markerfacecolor=OKABE_ITO[0] if kind == RESOLVED else "white")
            if kind in (AT_MOST, AT_LEAST):
                kinds.add(kind)
                end = geo / arrow if kind == AT_MOST else geo * arrow
                axes.annotate("", (panel.x[i], end), (panel.x[i], geo),
                              arrowprops={"arrowstyle": "->", "color": OKABE_ITO[4]})
        axes.set_yscale("log")
    for i in np.flatnonzero(~shown):
        axes.annotate("no value", (panel.x[i], 0.02), xycoords=("data", "axes fraction"), ha="center",
                      fontsize=8)
    axes.set_ylabel("network criticality,\ngeometric mean (log)", fontsize=8)
    return kinds


def plot_axis_networks(figure_data: AxisNetworkFigure, title: str) -> Figure:
    """Per panel (configurations with the other fields fixed): network criticality (when measured;
    log scale, 95% CI, open markers and arrows for censored scores) above the generalisation gap
    (points, mean ± 95% CI), both against the axis."""
    data, axis = figure_data, figure_data.axis
    rows = 2 if data.settings is not None else 1
    size = _size(len(data.panels), rows)
    figure = new_figure(*size)
    cells = _grid(figure, len(data.panels), rows)
    censored: set[str] = set()
    for panel, column in zip(data.panels, cells, strict=True):
        if data.settings is not None:
            censored |= _criticality_axes(column[0], axis, panel)
            column[0].set_title(fitted(panel.title or "network criticality", PANEL_SIZE[0], 9), fontsize=9)
        gap_axes = column[-1]
        measured = np.isfinite(panel.gap)
        mean, low, high = (100 * a[measured] for a in (panel.gap, panel.gap_low, panel.gap_high))
        gap_axes.errorbar(panel.x[measured], mean, yerr=whiskers(np.vstack([mean - low, high - mean])),
                          capsize=3, marker="s", color=OKABE_ITO[1], markersize=6)
        gap_axes.axhline(0, color="black", linewidth=0.8)
        gap_axes.set_ylabel("generalisation gap:\ntrain − test accuracy (points)", fontsize=8)
        if data.settings is None:
            gap_axes.set_title(fitted(panel.title or "generalisation gap", PANEL_SIZE[0], 9), fontsize=9)
        for axes in column:
            _axis_ticks(axes, axis, axis_name(axis.key))
    handles = [Line2D([], [], marker="s", color=OKABE_ITO[1], label="generalisation gap, mean ± 95% CI")]
    if data.settings is not None:
        handles.insert(0, Line2D([], [], marker="o", color=OKABE_ITO[0],
                                 label=f"network criticality ({data.settings}), geometric mean, 95% CI"))
        handles += [Line2D([], [], marker="o", markerfacecolor="white", color=OKABE_ITO[0], linestyle="none",
                           label=_CENSORED[kind]) for kind in sorted(censored)]
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=1 if rows == 2 else 2)
    set_title(figure, title, size[0])
    return figure
