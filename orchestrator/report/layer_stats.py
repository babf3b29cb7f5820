"""Per-layer statistics of weight movement and module criticality across seeds (``layer_stats``).

One row per (sweep, config_id, quantity, layer, epoch, settings), with the
same ``n`` / mean / std (ddof=1) / Student-t 95% CI columns and the same NaN
rule for n < 2 as ``stats.parquet`` (:func:`orchestrator.report.stats.t_interval`).
``n`` is the number of seeds (one value per network). Quantities:

- movement, per (layer, epoch) over every stored checkpoint: ``norm``,
  ``dist_init``, ``rel_dist_init``, ``cos_init``, ``dist_final``
  (``index/layers``; units as there: norms of the layer's parameters,
  ``rel_dist_init`` a fraction of the initial norm);
- ``criticality`` per layer or group of layers (epoch null), and ``network_criticality``
  (layer null: the sum over a network's single layers, networks with every layer measured;
  groups, told by their ``module_type`` in ``index/layers``, are not summed);
  ``settings`` names the criticality grid, since networks measured under
  different settings are never pooled. Criticality spans orders of magnitude,
  so it is summarised on the log scale: ``geo_mean`` (the geometric mean) and
  ``geo_ci95_low``/``geo_ci95_high`` (the Student-t 95% CI of the mean of the
  logs, back-transformed), NaN when a score is 0 (no log) and for the other
  quantities. ``n_measured`` counts the seeds measured, ``n`` those of them
  with a value (no pair passing leaves none), ``n_censored`` those whose
  score is censored (:mod:`orchestrator.report.censoring`, no value
  included); ``censoring`` says which way (``at most``: upper bounds; empty
  when none is censored);
- ``gen_gap`` (layer and epoch null): train accuracy minus test accuracy of
  the trained network, a fraction (from the trial rows' ``train_acc``).

``n`` counts the seeds with a finite value. After the columns of
``LAYER_STATS_SCHEMA``, one column per grid axis, as in ``stats``
(:mod:`orchestrator.report.axes`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.report.axes import SweepAxes, axis_csv_frame, with_axis_arrays, with_axis_columns
from orchestrator.report.censoring import RESOLVED, censoring, combined
from orchestrator.report.layer_order import LayerOrder
from orchestrator.report.stats import layer_position, t_interval, trials_frame, widths_label
from trainables.plan import GROUP_LEVELS, CriticalitySettings
from trainables.store import Store

MOVEMENT = ("rel_dist_init", "dist_init", "cos_init", "norm", "dist_final")
CRITICALITY = ("criticality", "network_criticality")
QUANTITY_ORDER = (*MOVEMENT, *CRITICALITY, "gen_gap")
GROUP_TYPES = tuple(level for level in GROUP_LEVELS if level != "layer")
"""The ``module_type`` of a group's movement rows (``block``, ``stage``)."""
GROUP_KEYS = ["sweep", "config_id", "quantity", "layer", "epoch", "settings"]
DESCRIPTIVE = ["dataset", "model", "widths", "config_name", "config_rank"]
LAYER_STATS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("config_id", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("widths", pa.list_(pa.int32())),
        ("quantity", pa.string()),
        ("layer", pa.string()),
        ("epoch", pa.int32()),
        ("settings", pa.string()),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("ci95_low", pa.float64()),
        ("ci95_high", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("geo_mean", pa.float64()),
        ("geo_ci95_low", pa.float64()),
        ("geo_ci95_high", pa.float64()),
        ("n_measured", pa.int64()),
        ("n_censored", pa.int64()),
        ("censoring", pa.string()),
        ("config_name", pa.string()),
    ]
)
LAYER_STATS_COLUMNS = LAYER_STATS_SCHEMA.names
CRITICALITY_KEY = ["trial_id", "layer", "settings"]


def read_measures(store: Store, trial_ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """The ``layers`` and ``criticality`` rows of ``trial_ids`` (index tables only, no weights)."""
    layers = store.read_index("layers")
    criticality = store.read_index("criticality")
    return (
        layers.filter(pc.is_in(layers.column("trial_id"), value_set=trial_ids)),
        criticality.filter(pc.is_in(criticality.column("trial_id"), value_set=trial_ids)),
    )


def settings_label(row: pd.Series) -> str:
    """E.g. ``11x11 sigma_max=1 K=10 rtol=1.01 subset=10000`` (grid) or ``bisect 11 alphas
    precision=0.05 sigma=1e-06..1 RMS K=10 rtol=1.01 subset=10000``."""
    return CriticalitySettings.of_row(row).label()


def settings_value(label: str, name: str) -> str | None:
    """The value of ``name`` (``sigma_max``, ``rtol``) in a :func:`settings_label`, or None."""
    for part in label.split():
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


def _long_values(trials: pa.Table, layers: pa.Table, criticality: pa.Table) -> pd.DataFrame:
    """One value per (trial, quantity, layer, epoch, settings), with its ``censoring``."""
    parts = []
    movement = layers.to_pandas()
    if not movement.empty:
        long = movement.melt(
            id_vars=["trial_id", "layer", "epoch"], value_vars=list(MOVEMENT), var_name="quantity"
        )
        parts.append(long.assign(settings=None, censoring=RESOLVED))
    critical = criticality.to_pandas()
    if not critical.empty:
        critical["settings"] = critical.apply(settings_label, axis=1)
        critical = critical.drop_duplicates(subset=CRITICALITY_KEY, keep="first")
        critical["censoring"] = censoring(critical)
        per_layer = critical[["trial_id", "layer", "settings", "criticality", "censoring"]].rename(
            columns={"criticality": "value"}
        )
        parts.append(per_layer.assign(quantity="criticality", epoch=None))
        # network criticality sums single layers: a group's rows would count its layers twice
        groups = set() if movement.empty else set(
            movement.loc[movement["module_type"].isin(GROUP_TYPES), "layer"]
        )
        network = (
            critical[~critical["layer"].isin(groups)].groupby(["trial_id", "settings"])
            .agg(value=("criticality", lambda v: v.sum(min_count=1) if v.notna().all() else np.nan),
                 censoring=("censoring", combined))
            .reset_index()
        )
        parts.append(network.assign(quantity="network_criticality", layer=None, epoch=None))
    gap = trials.select(["trial_id", "train_acc", "test_acc"]).to_pandas()
    gap = gap.assign(value=gap["train_acc"] - gap["test_acc"]).dropna(subset=["value"])
    if not gap.empty:
        parts.append(
            gap[["trial_id", "value"]].assign(
                quantity="gen_gap", layer=None, epoch=None, settings=None, censoring=RESOLVED
            )
        )
    if not parts:
        return pd.DataFrame(
            columns=["trial_id", "quantity", "layer", "epoch", "settings", "value", "censoring"]
        )
    return pd.concat([p.astype({"epoch": "Int32"}) for p in parts], ignore_index=True)


def compute_layer_stats(
    trials: pa.Table, layers: pa.Table, criticality: pa.Table, axes: SweepAxes | None = None,
    networks: LayerOrder | None = None,
) -> pd.DataFrame:
    """Aggregate movement, criticality and the generalisation gap over the seeds of each
    configuration; columns ``LAYER_STATS_COLUMNS``, then one per grid axis in ``axes``. Only rows of
    trials in ``trials`` count. Layers are in forward order (``networks``,
    :mod:`orchestrator.report.layer_order`; a layer it does not know sorts by name after the known
    ones)."""
    values = _long_values(trials, layers, criticality)
    merged = values.merge(trials_frame(trials), on="trial_id", how="inner")
    if merged.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LAYER_STATS_COLUMNS})
    value = merged["value"].astype(float)
    positive = value.where(value > 0)
    merged = merged.assign(
        value=value,
        log=np.log(positive),
        not_positive=value <= 0,
        censored=merged["censoring"] != RESOLVED,
    )
    grouped = merged.groupby(GROUP_KEYS, dropna=False, sort=False).agg(
        n=("value", "count"),
        n_measured=("value", "size"),
        mean=("value", "mean"),
        std=("value", "std"),
        min=("value", "min"),
        max=("value", "max"),
        log_mean=("log", "mean"),
        log_std=("log", "std"),
        not_positive=("not_positive", "any"),
        n_censored=("censored", "sum"),
        censoring=("censoring", combined),
        **{column: (column, "first") for column in DESCRIPTIVE},
    )
    out = grouped.reset_index()
    n = out["n"].to_numpy()
    out["ci95_low"], out["ci95_high"] = t_interval(out["mean"].to_numpy(), out["std"].to_numpy(), n)
    out.loc[out["n"] < 2, "std"] = np.nan
    low, high = t_interval(out["log_mean"].to_numpy(), out["log_std"].to_numpy(), n)
    logged = (out["quantity"].isin(CRITICALITY) & ~out["not_positive"]).to_numpy()
    for column, logs in (("geo_mean", out["log_mean"].to_numpy()), ("geo_ci95_low", low),
                         ("geo_ci95_high", high)):
        out[column] = np.where(logged, np.exp(logs), np.nan)
    out["n"] = out["n"].astype("int64")
    out["n_measured"] = out["n_measured"].astype("int64")
    out["n_censored"] = out["n_censored"].astype("int64")
    known = networks or {}
    order = out.assign(
        _quantity=out["quantity"].map(QUANTITY_ORDER.index),
        _layer=[
            layer_position(layer, known[config].index(layer) if config in known else None)
            for config, layer in zip(out["config_id"], out["layer"], strict=True)
        ],
    ).sort_values(
        ["sweep", "config_rank", "_quantity", "_layer", "epoch", "settings"],
        na_position="first",
        kind="stable",
    )
    order["widths"] = order["widths"].map(list)
    return with_axis_columns(order[LAYER_STATS_COLUMNS].reset_index(drop=True), trials, axes)


def layer_stats_to_arrow(stats: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(stats[LAYER_STATS_COLUMNS], schema=LAYER_STATS_SCHEMA, preserve_index=False)
    return with_axis_arrays(table, stats, LAYER_STATS_COLUMNS)


def layer_stats_to_csv(stats: pd.DataFrame) -> str:
    """The layer_stats table as CSV text; ``widths`` written as ``"256-128-64"``, nulls empty."""
    frame = stats[LAYER_STATS_COLUMNS].copy()
    frame["widths"] = frame["widths"].map(widths_label)
    frame = frame.join(axis_csv_frame(stats, LAYER_STATS_COLUMNS))
    return frame.to_csv(index=False, na_rep="", lineterminator="\n")
