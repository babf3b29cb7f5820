"""The data of the report's figures along a grid axis (testable without drawing).

For each grid axis of a sweep (:mod:`orchestrator.report.axes`): per-layer accuracy of reinit@0
and rerandomize against the axis values (:func:`axis_figure`), and the generalisation gap and
network criticality against them (:func:`axis_network_figure`). The other fields that tell the
sweep's configurations apart (another axis, ``widths``) are held fixed: one panel per combination
of their values, each configuration in exactly one panel. Built from the stats and layer_stats
tables, as every figure is; fractions here, percent in :mod:`orchestrator.report.axis_plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.catalog.naming import describe_fields, distinguishing_fields, format_value, order_key
from orchestrator.report.figures import LogPoints, log_points, relative_depth
from orchestrator.report.stats import ConfigView


def _interval(row: pd.Series | None) -> tuple[float, float, float]:
    """(mean_acc, ci95_low, ci95_high) of a stats row; NaN when it was not measured."""
    if row is None:
        return (np.nan, np.nan, np.nan)
    return (float(row["mean_acc"]), float(row["ci95_low"]), float(row["ci95_high"]))


AXIS_KINDS = (("reinit@0", "reinit", 0), ("rerandomize", "rerandomize", None))
"""(name, swap kind, epoch) of the swaps drawn against an axis: reinit to epoch 0, and a fresh draw."""
LOG_RATIO = 4.0
"""A positive numeric axis whose largest value is at least this many times its smallest is drawn
on a log scale (learning rates, batch sizes), any other numeric axis on a linear one."""


@dataclass(frozen=True)
class AxisPositions:
    """Where an axis' values go: ``values`` in order (numbers by magnitude, else by text), ``ticks``
    their labels, ``scale`` ``log`` or ``linear`` (numbers: a value is its position) or
    ``category`` (the i-th value at i)."""

    key: str
    values: tuple[object, ...]
    ticks: tuple[str, ...]
    scale: str

    def position(self, value: object) -> float:
        """Where ``value`` (one of ``values``) lies on the axis."""
        return float(self.values.index(value)) if self.scale == "category" else float(value)


def axis_positions(key: str, values: Sequence[object]) -> AxisPositions:
    """The positions of an axis with ``values`` (repeats counted once; see :data:`LOG_RATIO`)."""
    distinct = sorted(dict.fromkeys(values), key=order_key)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct)
    if not numeric:
        scale = "category"
    else:
        numbers = [float(v) for v in distinct]
        wide = bool(numbers) and min(numbers) > 0 and max(numbers) >= LOG_RATIO * min(numbers)
        scale = "log" if wide else "linear"
    return AxisPositions(key, tuple(distinct), tuple(format_value(v) for v in distinct), scale)


@dataclass(frozen=True, eq=False)
class AxisPanel:
    """The configurations of one combination of the other fields, in axis order.

    ``title`` names what they share (``widths 16-8``; empty when nothing else varies), ``configs``
    their names, ``x`` their positions (:class:`AxisPositions`). ``layers`` are the curves: the
    configurations' layers (their union when the configurations differ in depth), ``depth`` each
    one's relative depth (0 = first layer, 1 = output layer) in the first configuration that has
    it. ``mean``, ``low`` and ``high`` (fractions; NaN = not measured, or no interval with n < 2)
    have shape (len(kinds), len(layers), len(configs)); ``trained`` and ``chance`` (NaN = unknown)
    one value per configuration.
    """

    title: str
    configs: tuple[str, ...]
    x: np.ndarray
    layers: tuple[str, ...]
    depth: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    trained: np.ndarray
    chance: np.ndarray


@dataclass(frozen=True, eq=False)
class AxisFigure:
    """Per-layer accuracy against one grid axis of one sweep: one panel per combination of the
    other fields that vary (``fixed``), swaps ``kinds`` (names of :data:`AXIS_KINDS` measured)."""

    sweep: str
    axis: AxisPositions
    fixed: tuple[str, ...]
    kinds: tuple[str, ...]
    panels: tuple[AxisPanel, ...]


def _panels(
    views: Sequence[ConfigView], specs: Mapping[str, Mapping[str, object]], key: str
) -> tuple[tuple[str, ...], dict[str, list[ConfigView]]]:
    """The fields held fixed along ``key`` and the views of each combination of their values (first
    seen first): every field that distinguishes the configurations but the axis (and, for a block,
    what it holds)."""
    fields = tuple(
        name for name in distinguishing_fields(specs[v.key.config_id] for v in views)
        if name != key and not name.startswith(f"{key}.")
    )
    panels: dict[str, list[ConfigView]] = {}
    for view in views:
        panels.setdefault(describe_fields(specs[view.key.config_id], fields), []).append(view)
    return fields, panels


def axis_value_of(view: ConfigView, key: str) -> object:
    """The configuration's value on axis ``key`` (its stats rows' axis column; None when unknown)."""
    if key not in view.rows.columns:
        return None
    value = view.rows[key].iloc[0]
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _along(views: Sequence[ConfigView], axis: AxisPositions) -> tuple[list[ConfigView], np.ndarray]:
    """``views`` in axis order, and their positions."""
    ordered = sorted(views, key=lambda view: axis.values.index(axis_value_of(view, axis.key)))
    return ordered, np.array([axis.position(axis_value_of(view, axis.key)) for view in ordered], dtype=float)


def _panel_layers(views: Sequence[ConfigView]) -> tuple[tuple[str, ...], np.ndarray]:
    """The layers of ``views`` by relative depth (the first configuration's order among equals)."""
    depth: dict[str, float] = {}
    for view in views:
        for layer, d in zip(view.by_depth, relative_depth(len(view.by_depth)), strict=True):
            depth.setdefault(layer, float(d))
    layers = sorted(depth, key=lambda layer: depth[layer])
    return tuple(layers), np.array([depth[layer] for layer in layers], dtype=float)


def axis_figure(
    views: Sequence[ConfigView],
    specs: Mapping[str, Mapping[str, object]],
    chances: Mapping[str, float | None],
    key: str,
) -> AxisFigure | None:
    """Reinit@0 and rerandomize accuracy per layer against axis ``key`` for the views of one sweep
    (``specs`` and ``chances`` by config_id: flattened training spec and 1/n_classes); None when
    fewer than two values of the axis, or neither swap, were measured."""
    views = [view for view in views if axis_value_of(view, key) is not None]
    axis = axis_positions(key, [axis_value_of(view, key) for view in views])
    kinds = [swap for swap in AXIS_KINDS if any(view.has(swap[1]) for view in views)]
    if len(axis.values) < 2 or not kinds:
        return None
    fixed, groups = _panels(views, specs, key)
    panels = []
    for title, members in groups.items():
        members, x = _along(members, axis)
        layers, depth = _panel_layers(members)
        values = np.array([
            [[_interval(view.row(kind, layer, epoch)) for view in members] for layer in layers]
            for _, kind, epoch in kinds
        ], dtype=float).reshape(len(kinds), len(layers), len(members), 3)
        trained = [
            np.nan if view.last_epoch is None else _interval(view.row("none", None, view.last_epoch))[0]
            for view in members
        ]
        chance = [chances.get(view.key.config_id) for view in members]
        panels.append(AxisPanel(
            title, tuple(view.key.name for view in members), x, layers, depth,
            values[..., 0], values[..., 1], values[..., 2], np.array(trained, dtype=float),
            np.array([np.nan if c is None else c for c in chance], dtype=float),
        ))
    return AxisFigure(views[0].key.sweep, axis, fixed, tuple(name for name, _, _ in kinds), tuple(panels))


@dataclass(frozen=True, eq=False)
class AxisNetworkPanel:
    """Per-network quantities of one panel's configurations along an axis (as in :class:`AxisPanel`):
    the generalisation gap (train − test accuracy of the trained network, a fraction: ``gap``,
    ``gap_low``, ``gap_high``; NaN = not measured) and network criticality (the geometric mean over
    seeds and its censoring, labelled by configuration; None when the sweep has none)."""

    title: str
    configs: tuple[str, ...]
    x: np.ndarray
    gap: np.ndarray
    gap_low: np.ndarray
    gap_high: np.ndarray
    criticality: LogPoints | None


@dataclass(frozen=True, eq=False)
class AxisNetworkFigure:
    """The generalisation gap and network criticality (its ``settings``; None: not measured)
    against one axis, one panel per combination of the ``fixed`` fields."""

    sweep: str
    axis: AxisPositions
    fixed: tuple[str, ...]
    settings: str | None
    panels: tuple[AxisNetworkPanel, ...]


_NO_ROW = pd.Series({"mean": np.nan, "ci95_low": np.nan, "ci95_high": np.nan, "geo_mean": np.nan,
                     "geo_ci95_low": np.nan, "geo_ci95_high": np.nan, "censoring": ""})


def axis_network_figure(
    views: Sequence[ConfigView],
    specs: Mapping[str, Mapping[str, object]],
    layer_stats: pd.DataFrame,
    key: str,
    settings: str | None,
) -> AxisNetworkFigure | None:
    """The ``gen_gap`` and ``network_criticality`` (of ``settings``; None: none) rows of
    ``layer_stats`` for the views of one sweep against axis ``key``; None when fewer than two values
    of the axis have either."""
    wanted = layer_stats[
        (layer_stats["quantity"] == "gen_gap")
        | ((layer_stats["quantity"] == "network_criticality") & (layer_stats["settings"] == settings))
    ]
    found = {(row["sweep"], row["config_id"], row["quantity"]): row for _, row in wanted.iterrows()}

    def row(view: ConfigView, quantity: str) -> pd.Series:
        return found.get((view.key.sweep, view.key.config_id, quantity), _NO_ROW)

    views = [
        view for view in views
        if axis_value_of(view, key) is not None
        and any((view.key.sweep, view.key.config_id, q) in found for q in ("gen_gap", "network_criticality"))
    ]
    axis = axis_positions(key, [axis_value_of(view, key) for view in views])
    if len(axis.values) < 2:
        return None
    fixed, groups = _panels(views, specs, key)
    panels = []
    for title, members in groups.items():
        members, x = _along(members, axis)
        names = tuple(view.key.name for view in members)
        gaps = [row(view, "gen_gap") for view in members]
        critical = (
            None if settings is None
            else log_points(names, [row(view, "network_criticality") for view in members])
        )
        gap = (np.array([float(g[column]) for g in gaps]) for column in ("mean", "ci95_low", "ci95_high"))
        panels.append(AxisNetworkPanel(title, names, x, *gap, critical))
    return AxisNetworkFigure(views[0].key.sweep, axis, fixed, settings, tuple(panels))
