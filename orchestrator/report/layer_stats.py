"""Per-layer statistics of weight movement and module criticality across seeds (``layer_stats``).

One row per (sweep, config_id, quantity, layer, epoch, settings), with the
same ``n`` / mean / std (ddof=1) / Student-t 95% CI columns and the same NaN
rule for n < 2 as ``stats.parquet`` (:func:`orchestrator.report.stats.t_interval`).
``n`` is the number of seeds (one value per network). Quantities:

- movement, per (layer, epoch) over every stored checkpoint: ``norm``,
  ``dist_init``, ``rel_dist_init``, ``cos_init``, ``dist_final``
  (``index/layers``; units as there: norms of the layer's parameters,
  ``rel_dist_init`` a fraction of the initial norm);
- ``criticality`` per layer (epoch null), and ``network_criticality`` (layer
  null: the sum over a network's layers, networks with every layer measured);
  ``settings`` names the criticality grid, since networks measured under
  different settings are never pooled;
- ``gen_gap`` (layer and epoch null): train accuracy minus test accuracy of
  the trained network, a fraction (from the trial rows' ``train_acc``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.report.layer_order import LayerOrder
from orchestrator.report.stats import layer_position, t_interval, trials_frame, widths_label
from trainables.store import Store

MOVEMENT = ("rel_dist_init", "dist_init", "cos_init", "norm", "dist_final")
QUANTITY_ORDER = (*MOVEMENT, "criticality", "network_criticality", "gen_gap")
GROUP_KEYS = ["sweep", "config_id", "quantity", "layer", "epoch", "settings"]
DESCRIPTIVE = ["dataset", "model", "widths"]
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
    """E.g. ``11x11 sigma_max=1 K=10 rtol=1.01 subset=10000``."""
    return (
        f"{int(row['n_alpha'])}x{int(row['n_sigma'])} sigma_max={row['sigma_max']:g} "
        f"K={int(row['noise_samples'])} rtol={row['rtol']:g} subset={int(row['subset_size'])}"
    )


def _long_values(trials: pa.Table, layers: pa.Table, criticality: pa.Table) -> pd.DataFrame:
    """One value per (trial, quantity, layer, epoch, settings)."""
    parts = []
    movement = layers.to_pandas()
    if not movement.empty:
        long = movement.melt(
            id_vars=["trial_id", "layer", "epoch"], value_vars=list(MOVEMENT), var_name="quantity"
        )
        parts.append(long.assign(settings=None))
    critical = criticality.to_pandas()
    if not critical.empty:
        critical["settings"] = critical.apply(settings_label, axis=1)
        critical = critical.drop_duplicates(subset=CRITICALITY_KEY, keep="first")
        per_layer = critical[["trial_id", "layer", "settings", "criticality"]].rename(
            columns={"criticality": "value"}
        )
        parts.append(per_layer.assign(quantity="criticality", epoch=None))
        network = (
            critical.groupby(["trial_id", "settings"])
            .agg(value=("criticality", lambda v: v.sum(min_count=1) if v.notna().all() else np.nan))
            .reset_index()
        )
        parts.append(network.assign(quantity="network_criticality", layer=None, epoch=None))
    gap = trials.select(["trial_id", "train_acc", "test_acc"]).to_pandas()
    gap = gap.assign(value=gap["train_acc"] - gap["test_acc"]).dropna(subset=["value"])
    if not gap.empty:
        parts.append(
            gap[["trial_id", "value"]].assign(quantity="gen_gap", layer=None, epoch=None, settings=None)
        )
    if not parts:
        return pd.DataFrame(columns=["trial_id", "quantity", "layer", "epoch", "settings", "value"])
    return pd.concat([p.astype({"epoch": "Int32"}) for p in parts], ignore_index=True)


def compute_layer_stats(
    trials: pa.Table, layers: pa.Table, criticality: pa.Table, networks: LayerOrder | None = None
) -> pd.DataFrame:
    """Aggregate movement, criticality and the generalisation gap over the seeds of each
    configuration; columns ``LAYER_STATS_COLUMNS``. Only rows of trials in ``trials`` count.
    Layers are in forward order (``networks``, :mod:`orchestrator.report.layer_order`; a layer
    it does not know sorts by name after the known ones)."""
    values = _long_values(trials, layers, criticality)
    merged = values.merge(trials_frame(trials), on="trial_id", how="inner")
    if merged.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LAYER_STATS_COLUMNS})
    merged = merged.dropna(subset=["value"])
    grouped = merged.groupby(GROUP_KEYS, dropna=False, sort=False).agg(
        n=("seed", "nunique"),
        mean=("value", "mean"),
        std=("value", "std"),
        min=("value", "min"),
        max=("value", "max"),
        **{column: (column, "first") for column in DESCRIPTIVE},
    )
    out = grouped.reset_index()
    out["ci95_low"], out["ci95_high"] = t_interval(
        out["mean"].to_numpy(), out["std"].to_numpy(), out["n"].to_numpy()
    )
    out.loc[out["n"] < 2, "std"] = np.nan
    out["n"] = out["n"].astype("int64")
    known = networks or {}
    order = out.assign(
        _widths=out["widths"].map(tuple),
        _quantity=out["quantity"].map(QUANTITY_ORDER.index),
        _layer=[
            layer_position(layer, known[config].index(layer) if config in known else None)
            for config, layer in zip(out["config_id"], out["layer"], strict=True)
        ],
    ).sort_values(
        ["sweep", "dataset", "model", "_widths", "config_id", "_quantity", "_layer", "epoch", "settings"],
        na_position="first",
        kind="stable",
    )
    order["widths"] = order["widths"].map(list)
    return order[LAYER_STATS_COLUMNS].reset_index(drop=True)


def layer_stats_to_arrow(stats: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(stats[LAYER_STATS_COLUMNS], schema=LAYER_STATS_SCHEMA, preserve_index=False)


def layer_stats_to_csv(stats: pd.DataFrame) -> str:
    """The layer_stats table as CSV text; ``widths`` written as ``"256-128-64"``, nulls empty."""
    frame = stats[LAYER_STATS_COLUMNS].copy()
    frame["widths"] = frame["widths"].map(widths_label)
    return frame.to_csv(index=False, na_rep="", lineterminator="\n")
