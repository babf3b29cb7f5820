"""Drawing the report's figures (data from :mod:`orchestrator.report.figures`) as PNG.

matplotlib's object API with the Agg canvas (no pyplot, no display), constrained
layout so titles and legends fit. Rules every figure follows: heatmaps use
viridis, one colour-blind-safe perceptual map; every accuracy axis runs 0-100%
and shows chance (and the trained network); curves of layers differ in marker
and line style as well as colour (viridis by depth); sizes grow with the number
of layers, and a long layer list turns bar charts on their side.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestrator.report.censoring import AT_LEAST, AT_MOST, RESOLVED
from orchestrator.report.figures import Bars, Curve, DropProfile, Heatmap, LogPoints

DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINE_STYLES = ("-", "--", "-.", ":")
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#F0E442")
"""The Okabe-Ito colour-blind-safe palette, for configurations (yellow last: faint on white)."""
MANY_LAYERS = 16
"""More layers than this: bar charts are drawn horizontally, legends give way to a depth colour bar."""
CHANCE_STYLE = {"color": "dimgrey", "linestyle": ":", "linewidth": 1.2}
TRAINED_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.0}
HEATMAP_MAP = "viridis"
DODGE = 0.01
"""Sideways offset between neighbouring curves, as a fraction of the x range."""
ACCURACY_TOP = 101.5
"""An accuracy axis ends just above 100%, so a whisker's cap at 100% stays visible."""


def to_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def whiskers(lengths: np.ndarray) -> np.ndarray:
    """Error-bar lengths as matplotlib takes them: none (0) where NaN, never below 0 (an interval
    without spread can come out a rounding error below its mean)."""
    return np.clip(np.nan_to_num(lengths, nan=0.0), 0.0, None)


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def fitted(title: str, width_inches: float, fontsize: float = 10) -> str:
    """``title`` wrapped to lines that fit ``width_inches`` at ``fontsize`` points."""
    chars = max(20, int(width_inches * 130 / fontsize))
    return "\n".join(textwrap.wrap(title, chars))


def set_title(figure: Figure, title: str, width_inches: float) -> None:
    """The figure's title, wrapped to its width and centred over the whole figure (constrained
    layout makes room for it)."""
    figure.suptitle(fitted(title, width_inches), fontsize=10)


def layer_style(index: int, count: int) -> dict:
    """Colour (viridis by depth), marker and line style of the ``index``-th of ``count`` layers;
    neighbours differ in all three."""
    colour = colormaps["viridis"](0.85 * index / max(count - 1, 1))
    return {"color": colour, "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}


def config_style(index: int) -> dict:
    return {"color": OKABE_ITO[index % len(OKABE_ITO)], "marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINE_STYLES[index % len(LINE_STYLES)]}


def _accuracy_axis(axes, chance: float | None, trained: float | None, vertical: bool = True) -> None:
    """0-100% with the chance and trained reference lines, each labelled."""
    line = axes.axhline if vertical else axes.axvline
    if trained is not None and np.isfinite(trained):
        line(100 * trained, label="trained network", **TRAINED_STYLE)
    if chance is not None:
        line(100 * chance, label="chance (1/n_classes)", **CHANCE_STYLE)
    (axes.set_ylim if vertical else axes.set_xlim)(0, ACCURACY_TOP)


def plot_heatmap(heatmap: Heatmap, title: str) -> Figure:
    """Cells coloured (viridis, 0-100%) and labelled with the mean test error; blank = not measured.

    The quantity is error, as in Zhang et al., while the tables and bars show accuracy: title
    and colour bar say so. Every heatmap uses the same scale, so figures compare.
    """
    n_rows, n_cols = heatmap.error.shape
    many = n_rows > MANY_LAYERS
    row_height, fontsize = (0.3, 7) if many else (0.5, 9)
    width = 3.5 + 1.0 * n_cols
    figure = new_figure(width, 2.2 + row_height * n_rows)
    axes = figure.add_subplot()
    cmap = colormaps[HEATMAP_MAP].with_extremes(bad="white")
    percent = 100 * heatmap.error
    image = axes.imshow(np.ma.masked_invalid(percent), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(percent):
        if np.isfinite(value):
            colour = "black" if value > 55 else "white"  # viridis is dark below about 55%
            axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=fontsize, color=colour)
    axes.set_xticks(range(n_cols), heatmap.columns, rotation=30, ha="right")
    axes.set_yticks(range(n_rows), heatmap.rows, fontsize=fontsize + 1)
    axes.set_xlabel("layer re-randomized, or reset to its weights at this checkpoint")
    axes.set_ylabel("layer changed")
    set_title(figure, f"Test ERROR (%, 100 − accuracy; lower is better) — {title}", width)
    figure.colorbar(image, ax=axes, label="mean test error (%) = 100 − accuracy")
    return figure


def plot_bars(bars: Bars, title: str) -> Figure:
    """Grouped bars per layer with 95% CI error bars; trained and chance as reference lines.

    Only kinds with a measurement get a slot. An unmeasured bar (NaN) is absent, not drawn at
    0; a bar without an interval (n < 2) has no error bar; an interval cut at 0 or 100% ends
    in a triangle pointing past the cut. More than ``MANY_LAYERS`` layers: horizontal bars,
    first layer on top.
    """
    n_layers, n_kinds = len(bars.layers), max(len(bars.kinds), 1)
    vertical = n_layers <= MANY_LAYERS
    extent = 0.45 * n_kinds + 0.3
    size = (max(5.5, 2.5 + extent * n_layers), 4.2) if vertical else (7.5, 2.5 + 0.15 * n_kinds * n_layers)
    figure = new_figure(*size)
    axes = figure.add_subplot()
    positions = np.arange(n_layers)
    width = 0.8 / n_kinds
    labels = {
        "reinit@0": "trained net, layer reset to init (reinit@0)",
        "transplant": "initial net + this trained layer (transplant)",
    }
    colours = {"reinit@0": OKABE_ITO[0], "transplant": OKABE_ITO[1]}
    any_clipped = False
    for k, kind in enumerate(bars.kinds):
        measured = np.isfinite(bars.mean[k])
        where = positions[measured] + (k - (n_kinds - 1) / 2) * width
        mean = 100 * bars.mean[k][measured]
        errors = 100 * np.vstack([bars.mean[k] - bars.low[k], bars.high[k] - bars.mean[k]])[:, measured]
        errors = whiskers(errors)
        style = {"capsize": 3, "label": labels.get(kind, kind), "color": colours.get(kind)}
        if vertical:
            axes.bar(where, mean, width, yerr=errors, **style)
        else:
            axes.barh(where, mean, width, xerr=errors, **style)
        for at, low, high, cut in zip(where, bars.low[k][measured], bars.high[k][measured],
                                      bars.clipped[k][measured], strict=True):
            for end, marker in ((high, "^" if vertical else ">"), (low, "v" if vertical else "<")):
                if cut and end in (0.0, 1.0):
                    any_clipped = True
                    xy = (at, 100 * end) if vertical else (100 * end, at)
                    axes.plot(*xy, linestyle="none", marker=marker, color="black", markersize=5)
    _accuracy_axis(axes, bars.chance, bars.trained, vertical)
    if vertical:
        axes.set_xlim(-0.5, n_layers - 0.5)
        axes.set_xticks(positions, bars.layers, rotation=0 if n_layers <= 8 else 45,
                        ha="center" if n_layers <= 8 else "right")
        axes.set_xlabel("layer")
        axes.set_ylabel("test accuracy (%), mean ± 95% CI")
    else:
        axes.set_yticks(positions, bars.layers, fontsize=7)
        axes.set_ylim(n_layers - 0.5, -0.5)  # first layer on top, no empty rows
        axes.set_ylabel("layer")
        axes.set_xlabel("test accuracy (%), mean ± 95% CI")
    handles, names = axes.get_legend_handles_labels()
    if any_clipped:
        handles.append(Line2D([], [], linestyle="none", marker="^" if vertical else ">", color="black"))
        names.append("95% CI cut at 0 or 100%")
    figure.legend(handles, names, fontsize=8, loc="outside lower center", ncol=2)
    set_title(figure, f"Test accuracy per layer — {title}", size[0])
    return figure


def plot_drop_profiles(panels: Sequence[tuple[str, Sequence[DropProfile]]], title: str) -> Figure:
    """One panel per swap: drop vs relative depth, one line per configuration (Okabe-Ito colours,
    distinct markers and line styles, dodged sideways so whiskers do not hide each other)."""
    width = 6.0 * len(panels)
    figure = new_figure(width, 4.8)
    axes_list = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (panel_title, profiles) in zip(axes_list, panels, strict=True):
        for index, profile in enumerate(profiles):
            many = len(profile.layers) > MANY_LAYERS
            errors = 100 * np.vstack([profile.drop - profile.low, profile.high - profile.drop])
            axes.errorbar(
                profile.depth + (index - (len(profiles) - 1) / 2) * DODGE, 100 * profile.drop,
                yerr=whiskers(errors), capsize=0 if many else 3, markersize=3 if many else 6,
                label=profile.label, **config_style(index),
            )
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlabel("relative depth (0 = first layer, 1 = output layer)")
        axes.set_ylabel("drop vs trained (accuracy points), mean ± 95% CI")
        axes.set_title(fitted(panel_title, 6.0), fontsize=10)
    handles, names = axes_list[0].get_legend_handles_labels()
    figure.legend(handles, names, fontsize=8, loc="outside lower center", ncol=min(len(names), 3))
    set_title(figure, title, width)
    return figure


def plot_curves(
    curves: Sequence[Curve], title: str, xlabel: str, ylabel: str, scale: float = 1.0,
    chance: float | None = None, trained: float | None = None, accuracy: bool = False,
) -> Figure:
    """One line per layer with a shaded 95% CI band (no band where n < 2); values times ``scale``.

    Lines are dodged sideways by a sliver of the x range and their markers are open, so layers with
    equal values stay visible. ``accuracy``: the axis is an accuracy axis (0-100%, chance and
    trained drawn). More than ``MANY_LAYERS`` curves: a colour bar of depth replaces the legend.
    """
    many = len(curves) > MANY_LAYERS
    width = 7.5 if many else 6.5
    figure = new_figure(width, 4.6)
    axes = figure.add_subplot()
    xs = [x for c in curves for x in c.x]
    span = (max(xs) - min(xs)) if xs else 0.0
    for index, c in enumerate(curves):
        style = layer_style(index, len(curves))
        x = c.x + (0.0 if many else (index - (len(curves) - 1) / 2) * DODGE * span)
        axes.plot(x, scale * c.mean, markersize=5, markerfacecolor="none", label=c.label, **style)
        band = np.isfinite(c.low) & np.isfinite(c.high)
        if band.any():
            axes.fill_between(x[band], scale * c.low[band], scale * c.high[band], color=style["color"],
                              alpha=0.15, linewidth=0)
    if accuracy:
        _accuracy_axis(axes, chance, trained)
    else:
        axes.set_ylim(bottom=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    set_title(figure, title, width)
    if many:
        _depth_colourbar(figure, axes, [c.label for c in curves])
        if accuracy:
            axes.legend(*_reference_handles(axes), fontsize=8, loc="lower right")
    else:
        figure.legend(fontsize=8, loc="outside lower center", ncol=min(len(curves) + 2 * accuracy, 4))
    return figure


def _reference_handles(axes) -> tuple[list, list]:
    handles, names = axes.get_legend_handles_labels()
    references = ("trained network", "chance (1/n_classes)")
    kept = [(h, n) for h, n in zip(handles, names, strict=True) if n in references]
    return [h for h, _ in kept], [n for _, n in kept]


def _depth_colourbar(figure: Figure, axes, labels: Sequence[str]) -> None:
    mappable = ScalarMappable(Normalize(0, len(labels) - 1), colormaps["viridis"].resampled(256))
    bar = figure.colorbar(mappable, ax=axes, label="layer, in forward order")
    bar.set_ticks([0, len(labels) - 1], labels=[labels[0], labels[-1]])


_CENSORED_NOTE = {
    AT_MOST: "censored: an upper bound (best σ = the largest tried)",
    AT_LEAST: "censored: a lower bound (no pair passed)",
}


def plot_log_points(points: LogPoints, title: str, label_axis: str, value_axis: str) -> Figure:
    """Geometric means on a log axis with their back-transformed 95% CIs. A censored score is an
    open marker with an arrow the way the truth lies (towards smaller values for an upper bound); a
    label with no value (no pair passed, or a score of 0) says so at the axis' edge. More than
    ``MANY_LAYERS`` labels: drawn on their side, labels down the page."""
    n = len(points.labels)
    vertical = n <= MANY_LAYERS
    size = (max(6.0, 2.5 + 0.45 * n), 4.4) if vertical else (7.0, 2.5 + 0.22 * n)
    figure = new_figure(*size)
    axes = figure.add_subplot()

    def at(position: float, value: float) -> tuple[float, float]:
        return (position, value) if vertical else (value, position)

    shown = np.isfinite(points.geo) & (points.geo > 0)
    span = np.max(points.geo[shown]) / np.min(points.geo[shown]) if shown.any() else 1.0
    arrow = max(span, 10.0) ** 0.12  # an arrow's length on the log axis: a fraction of the values' span
    for i in range(n):
        kind = points.censoring[i]
        if not shown[i]:
            axes.annotate("no value" if kind == AT_LEAST else "0 or n/a", at(i, 0.02),
                          xycoords=at("data", "axes fraction"), ha="center" if vertical else "left",
                          va="bottom" if vertical else "center", fontsize=8)
            continue
        geo, low, high = points.geo[i], points.low[i], points.high[i]
        if np.isfinite(low) and np.isfinite(high):
            lengths = whiskers(np.array([[geo - low], [high - geo]]))
            axes.errorbar(*at([i], [geo]), **{"yerr" if vertical else "xerr": lengths}, color=OKABE_ITO[0],
                          capsize=4)
        axes.plot(*at([i], [geo]), marker="o", markersize=8, color=OKABE_ITO[0], linestyle="none",
                  markerfacecolor="white" if kind != RESOLVED else OKABE_ITO[0])
        if kind in (AT_MOST, AT_LEAST):
            end = geo / arrow if kind == AT_MOST else geo * arrow
            axes.annotate("", at(i, end), at(i, geo), arrowprops={"arrowstyle": "->", "color": OKABE_ITO[4]})
    if shown.any():
        (axes.set_yscale if vertical else axes.set_xscale)("log")
    handles = [Line2D([], [], marker="o", color=OKABE_ITO[0], linestyle="none",
                      label="geometric mean over seeds, 95% CI")]
    for kind in dict.fromkeys(points.censoring):
        if kind in _CENSORED_NOTE:
            handles.append(Line2D([], [], marker="o", markerfacecolor="white", color=OKABE_ITO[0],
                                  linestyle="none", label=_CENSORED_NOTE[kind]))
    figure.legend(handles=handles, fontsize=8, loc="outside lower center")
    if vertical:
        few = n <= 8
        axes.set_xticks(range(n), points.labels, rotation=0 if few else 45, ha="center" if few else "right")
        axes.set_xlabel(label_axis)
        axes.set_ylabel(value_axis)
    else:
        axes.set_yticks(range(n), points.labels, fontsize=7)
        axes.set_ylim(n - 0.5, -0.5)
        axes.set_ylabel(label_axis)
        axes.set_xlabel(value_axis)
    set_title(figure, title, size[0])
    return figure


def plot_criticality_vs_gap(
    gap: np.ndarray, gap_low: np.ndarray, gap_high: np.ndarray, points: LogPoints, title: str
) -> Figure:
    """One point per configuration (at least 3): network criticality (geometric mean, log scale)
    against the generalisation gap (fractions, drawn in points), both with 95% CIs; open markers
    for censored criticality."""
    if len(points.labels) < 3:
        raise ValueError("a scatter of configurations needs at least 3 points; show a table")
    figure = new_figure(7.0, 4.6)
    axes = figure.add_subplot()
    for index, label in enumerate(points.labels):
        style = config_style(index)
        xerr = 100 * np.array([[gap[index] - gap_low[index]], [gap_high[index] - gap[index]]])
        geo = points.geo[index]
        yerr = np.array([[geo - points.low[index]], [points.high[index] - geo]])
        censored = points.censoring[index] != RESOLVED
        axes.errorbar([100 * gap[index]], [geo], xerr=whiskers(xerr), yerr=whiskers(yerr),
                      capsize=3, marker=style["marker"], color=style["color"], markersize=7,
                      markerfacecolor="white" if censored else style["color"],
                      label=label + (f" ({points.censoring[index]})" if censored else ""))
    axes.set_yscale("log")
    axes.set_xlabel("generalisation gap: train minus test accuracy (points), mean ± 95% CI")
    axes.set_ylabel("network criticality, geometric mean (log)")
    set_title(figure, title, 7.0)
    figure.legend(fontsize=8, loc="outside lower center", ncol=2)
    return figure
