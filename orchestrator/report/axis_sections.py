"""The report along the grid axes: what a sweep's grid varied (for "What was run"), and per sweep
with axes, per axis, per-layer accuracy against the axis values and the networks' generalisation
gap and criticality against them (figures from :mod:`orchestrator.report.axis_figures`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from orchestrator.report import axis_plots, plots
from orchestrator.report.axes import SweepAxes
from orchestrator.report.axis_figures import (
    AxisFigure,
    AxisNetworkFigure,
    axis_figure,
    axis_network_figure,
    axis_positions,
    axis_value_of,
)
from orchestrator.report.document import Block, Bullets, Heading, Image, Paragraph, TableBlock, format_ci
from orchestrator.report.layer_sections import MIN_SCATTER_POINTS, censored_cell, criticality_cell
from orchestrator.report.stats import ConfigView

if TYPE_CHECKING:
    from orchestrator.report.sections import ConfigInfo

MAX_PANELS = 6
"""More combinations of the other fields than this: a table instead of a figure of panels."""
SCALE_WORDS = {"log": "on a log scale", "linear": "on a linear scale", "category": "as categories"}


def _mine(views: Sequence[ConfigView], sweep: str) -> list[ConfigView]:
    return [view for view in views if view.key.sweep == sweep]


def _values(views: Sequence[ConfigView], key: str) -> tuple[str, ...]:
    return axis_positions(key, [v for view in views if (v := axis_value_of(view, key)) is not None]).ticks


def grid_notes(axes: SweepAxes, views: Sequence[ConfigView]) -> list[Block]:
    """For "What was run": each sweep's grid axes and the values its complete configurations have."""
    items = []
    for sweep, keys in axes.items():
        mine = _mine(views, sweep)
        if not mine:
            continue
        named = "; ".join(f"{key} ({', '.join(_values(mine, key)) or 'no value measured'})" for key in keys)
        items.append(
            f"{sweep} is a grid over {named}, times its widths and seeds; its configurations are compared "
            f"along each axis in “{sweep}: along the grid axes” below, and stats.csv has a column per axis."
        )
    return [Bullets(tuple(items))] if items else []


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


def _cell(mean: float, low: float, high: float) -> str:
    """A fraction's mean and 95% CI in percent: ``91.2 [88.0, 94.4]``; ``–`` when not measured."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(low) or not math.isfinite(high):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _layer_table(data: AxisFigure) -> TableBlock:
    """The figure's values as a table: a row per (panel, swap, layer), a column per axis value."""
    positions = [data.axis.position(value) for value in data.axis.values]
    rows = []
    for panel in data.panels:
        at = {float(x): j for j, x in enumerate(panel.x)}
        for k, kind in enumerate(data.kinds):
            for i, layer in enumerate(panel.layers):
                cells = [
                    "–" if (j := at.get(x)) is None
                    else _cell(panel.mean[k, i, j], panel.low[k, i, j], panel.high[k, i, j])
                    for x in positions
                ]
                rows.append((panel.title or "–", kind, layer, *cells))
    header = (", ".join(data.fixed) or "configurations", "swap", "layer",
              *(f"{data.axis.key} {tick} (%)" for tick in data.axis.ticks))
    return TableBlock(header, tuple(rows))


def _layer_blocks(data: AxisFigure) -> list[Block]:
    key, sweep = data.axis.key, data.sweep
    fixed = (f"; one panel per combination of {', '.join(data.fixed)}, held fixed within it"
             if data.fixed else "")
    lead = Paragraph(
        f"Test accuracy of the trained network with one layer swapped, against {key} "
        f"({SCALE_WORDS[data.axis.scale]}){fixed}. One line per layer, coloured by its relative depth "
        "(0 = first layer, 1 = output layer), mean with its 95% CI over seeds; the trained network and "
        "chance drawn along the axis."
    )
    if len(data.panels) > MAX_PANELS:
        return [
            Paragraph(
                f"{len(data.panels)} combinations of {', '.join(data.fixed)} are more panels than a figure "
                f"shows legibly (at most {MAX_PANELS}): test accuracy in percent, mean [95% CI] over seeds."
            ),
            _layer_table(data),
        ]
    title = f"{sweep}: per-layer accuracy against {axis_plots.axis_name(key)}"
    png = plots.to_png(axis_plots.plot_axis_layers(data, title))
    return [lead, Image(f"axis-{_slug(sweep)}-{_slug(key)}.png",
                        f"per-layer accuracy against {key}, {sweep}", png)]


def _network_blocks(data: AxisNetworkFigure | None) -> list[Block]:
    if data is None:
        return []
    key, sweep = data.axis.key, data.sweep
    drawn = [panel for panel in data.panels if len(panel.configs) >= MIN_SCATTER_POINTS]
    quantities = ("network criticality and the generalisation gap" if data.settings
                  else "the generalisation gap")
    if not drawn or len(drawn) > MAX_PANELS:
        most = max(len(panel.configs) for panel in data.panels)
        why = (f"at most {most} values of {key} per panel: a line would invite a trend that {most} points "
               f"cannot show; it is drawn from {MIN_SCATTER_POINTS} on" if not drawn
               else f"{len(drawn)} panels are more than a figure shows legibly")
        return [Paragraph(f"{quantities.capitalize()} against {key}: in the table below ({why}).")]
    shown = AxisNetworkFigure(sweep, data.axis, data.fixed, data.settings, tuple(drawn))
    title = f"{sweep}: {quantities} against {axis_plots.axis_name(key)}"
    png = plots.to_png(axis_plots.plot_axis_networks(shown, title))
    left_out = len(data.panels) - len(drawn)
    note = (f" ({left_out} panel(s) of fewer than {MIN_SCATTER_POINTS} values left out: see the table)"
            if left_out else "")
    return [
        Paragraph(f"{quantities.capitalize()} of the trained networks against {key}{note}."),
        Image(f"axis-networks-{_slug(sweep)}-{_slug(key)}.png", f"{quantities} against {key}, {sweep}", png),
    ]


def _sweep_settings(layer_stats: pd.DataFrame, sweep: str) -> str | None:
    """The criticality settings most configurations of ``sweep`` were measured with (None: none)."""
    rows = layer_stats[(layer_stats["sweep"] == sweep) & (layer_stats["quantity"] == "network_criticality")]
    if rows.empty:
        return None
    counts = rows.groupby("settings", sort=False)["config_id"].nunique()
    return str(counts.idxmax())


def _network_table(
    views: Sequence[ConfigView], keys: Sequence[str], layer_stats: pd.DataFrame, settings: str | None
) -> list[Block]:
    """Per configuration: its axis values, generalisation gap and (when measured) network criticality."""
    rows = []
    for view in views:
        mine = layer_stats[(layer_stats["sweep"] == view.key.sweep)
                           & (layer_stats["config_id"] == view.key.config_id)]
        gap = mine[mine["quantity"] == "gen_gap"]
        critical = mine[(mine["quantity"] == "network_criticality") & (mine["settings"] == settings)]
        if gap.empty and critical.empty:
            continue
        values = [_values([view], key) for key in keys]
        cells = [view.key.name, *(v[0] if v else "–" for v in values)]
        if gap.empty:
            cells.append("–")
        else:
            g = gap.iloc[0]
            cells.append(format_ci(g["mean"], g["ci95_low"], g["ci95_high"], int(g["n"])))
        if settings is not None:
            cells += ["–", "–"] if critical.empty else [criticality_cell(critical.iloc[0]),
                                                         censored_cell(critical.iloc[0])]
        rows.append(tuple(cells))
    if not rows:
        return []
    header = ["configuration", *keys, "generalisation gap (points)"]
    if settings is not None:
        header += [f"network criticality ({settings}), geometric mean [95% CI]", "censored seeds"]
    return [
        Paragraph("Generalisation gap = train minus test accuracy of the trained network, in points, mean ± "
                  "95% CI over seeds" + ("; network criticality as its geometric mean over seeds." if settings
                                         else "; criticality was not measured.")),
        TableBlock(tuple(header), tuple(rows)),
    ]


def axis_sections(
    views: Sequence[ConfigView],
    infos: Mapping[tuple[str, str], ConfigInfo],
    layer_stats: pd.DataFrame,
    axes: SweepAxes,
) -> list[Block]:
    """Per sweep with grid axes: per axis, per-layer accuracy against it and the networks' gap and
    criticality against it; then the per-configuration table of those."""
    blocks: list[Block] = []
    for sweep, keys in axes.items():
        mine = _mine(views, sweep)
        if not mine:
            continue
        specs = {view.key.config_id: infos[(sweep, view.key.config_id)].spec for view in mine}
        chances = {view.key.config_id: infos[(sweep, view.key.config_id)].chance for view in mine}
        settings = _sweep_settings(layer_stats, sweep)
        blocks.append(Heading(2, f"{sweep}: along the grid axes"))
        for key in keys:
            blocks.append(Heading(3, f"Along {key}"))
            data = axis_figure(mine, specs, chances, key)
            if data is None:
                values = ", ".join(_values(mine, key)) or "none"
                blocks.append(Paragraph(f"Measured values of {key}: {values}; nothing to compare along it."))
                continue
            blocks += _layer_blocks(data)
            blocks += _network_blocks(axis_network_figure(mine, specs, layer_stats, key, settings))
        table = _network_table(mine, keys, layer_stats, settings)
        if table:
            blocks += [Heading(3, "Generalisation gap and network criticality by configuration"), *table]
    return blocks
