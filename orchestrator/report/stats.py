"""Per-layer statistics across seeds (DESIGN.md, "CLI": the `stats` table).

Units and semantics:

- Accuracies are fractions in [0, 1]; the report prints them as percentage points.
- One stats row per (sweep, config_id, kind, layer, epoch, alpha): only the
  seeds of one *configuration* (the same training spec but for its seed) are
  pooled, never networks trained with different settings. ``dataset``,
  ``model`` and ``widths`` are there to read, not to group by.
- The unit of replication is the seed: when a network has several
  measurements in a group (``rerandomize`` draws 0..k-1) they are first
  averaged within the network, and ``n`` counts distinct seeds.
- ``std_acc`` uses ddof=1; ``ci95_low``/``ci95_high`` are the Student-t 95%
  interval of the mean. With n < 2 no spread can be estimated: ``std_acc`` and
  every interval bound are NaN.
- The drop is paired by seed: drop = (that network's trained accuracy) -
  accuracy, positive = worse than trained. The trained accuracy is the
  network's ``none`` row at epoch == ``epochs``, or its trial row's
  ``test_acc`` if that row is absent.
- Intervals respect the range of what they bound: an accuracy's interval is
  cut to [0, 1] and a mean drop's to [mean trained - 1, mean trained] (each
  seed's drop lies in [trained - 1, trained]); ``ci95_clipped`` and
  ``drop_ci95_clipped`` say where a bound was cut. Cutting never changes
  whether an interval holds the true mean, which always lies in that range.
- ``config_name`` names the configuration by what distinguishes it within
  its sweep (:func:`orchestrator.catalog.naming.name_configs`); rows follow
  that module's order of configurations.
- After the columns of ``STATS_SCHEMA``, one column per grid axis of the
  sweeps in the table, named by its key (``optimizer.lr``), holding the
  configuration's value, null for sweeps without that axis
  (:mod:`orchestrator.report.axes`).
- ``layer_index`` is the layer's 0-based position in the forward pass and
  ``depth`` its relative depth, ``layer_index / (n_layers - 1)``
  (:mod:`orchestrator.report.layer_order`); both null where the row has no
  layer or the layer's position is not known. Layers are ordered by
  ``layer_index`` everywhere, never by name.
- ``recalibrate`` N > 0: the swapped networks were evaluated after every
  BatchNorm's statistics were re-estimated on N training samples; such rows
  are never pooled with the others (0, and every row written before v3). The
  drop is still against the trained network as stored. The report's figures and
  verdicts show the rows with ``recalibrate`` 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats as st

from orchestrator.catalog.contents import with_config_ids
from orchestrator.catalog.naming import TRIAL_COLUMNS, names_of_trials
from orchestrator.report.axes import SweepAxes, axis_csv_frame, with_axis_arrays, with_axis_columns
from orchestrator.report.layer_order import LayerOrder

GROUP_KEYS = ["sweep", "config_id", "kind", "layer", "epoch", "alpha", "recalibrate"]
DESCRIPTIVE = ["dataset", "model", "widths", "config_name", "config_rank"]
STATS_COLUMNS = [
    "sweep",
    "config_id",
    "dataset",
    "model",
    "widths",
    "kind",
    "layer",
    "epoch",
    "alpha",
    "n",
    "mean_acc",
    "std_acc",
    "ci95_low",
    "ci95_high",
    "min_acc",
    "max_acc",
    "mean_drop",
    "drop_ci95_low",
    "drop_ci95_high",
    "config_name",
    "ci95_clipped",
    "drop_ci95_clipped",
    "layer_index",
    "depth",
    "recalibrate",
]

STATS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("config_id", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("widths", pa.list_(pa.int32())),
        ("kind", pa.string()),
        ("layer", pa.string()),
        ("epoch", pa.int32()),
        ("alpha", pa.float64()),
        ("n", pa.int64()),
        ("mean_acc", pa.float64()),
        ("std_acc", pa.float64()),
        ("ci95_low", pa.float64()),
        ("ci95_high", pa.float64()),
        ("min_acc", pa.float64()),
        ("max_acc", pa.float64()),
        ("mean_drop", pa.float64()),
        ("drop_ci95_low", pa.float64()),
        ("drop_ci95_high", pa.float64()),
        # Extensions:
        ("config_name", pa.string()),  # what distinguishes the configuration within its sweep
        ("ci95_clipped", pa.bool_()),  # the accuracy interval was cut to [0, 1]
        ("drop_ci95_clipped", pa.bool_()),  # the drop interval was cut to its possible range
        ("layer_index", pa.int32()),  # the layer's position in the forward pass, 0-based
        ("depth", pa.float64()),  # layer_index / (n_layers - 1): 0 = first layer, 1 = output layer
        ("recalibrate", pa.int32()),  # training samples that re-estimated BatchNorm statistics; 0 = none
    ]
)
"""Arrow schema of ``stats.parquet`` (``widths`` stays a list<int32> there)."""

KIND_ORDER = ("none", "reinit", "rerandomize", "transplant", "interpolate")

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def layer_sort_key(layer: str) -> tuple[tuple[str, int], ...]:
    """Sort by name, part by dotted part, each by its prefix then its trailing number: ``fc2``
    before ``fc10``, ``layer1.9`` before ``layer1.10``, and a stage ``layer1`` just before its
    blocks ``layer1.0``, ``layer1.1``, ... (the order of groups, which have no ``layer_index``)."""
    parts = []
    for part in layer.split("."):
        match = _TRAILING_NUMBER.match(part)
        parts.append((match.group(1), int(match.group(2))) if match else (part, -1))
    return tuple(parts)


def layer_position(layer: object, layer_index: object) -> tuple:
    """The one order of rows by layer: no layer (the full network) first, then layers by
    ``layer_index``, then any name without an index (groups of layers, and layers whose position
    is not known; by :func:`layer_sort_key`)."""
    if not isinstance(layer, str):
        return (0, 0, ())
    if _none_if_na(layer_index) is not None:
        return (1, int(layer_index), ())
    return (2, 0, layer_sort_key(layer))


def widths_label(widths: tuple[int, ...] | list[int]) -> str:
    """``[256, 128, 64]`` -> ``"256-128-64"`` (the form used in stats.csv and file names)."""
    return "-".join(str(int(w)) for w in widths)


@dataclass(frozen=True)
class ConfigKey:
    """One configuration of one sweep: the unit of a heatmap and a results table.

    ``config_id`` identifies it; ``name`` says what distinguishes it within its sweep;
    ``dataset``, ``model`` and ``widths`` describe it.
    """

    sweep: str
    config_id: str
    name: str
    dataset: str
    model: str
    widths: tuple[int, ...]

    @property
    def label(self) -> str:
        """``demo: widths 256-128 · 13e20844``: how headings, titles and legends name it."""
        return f"{self.sweep}: {self.name}"


RowKey = tuple[str, str | None, int | None, float | None]
"""(kind, layer, epoch, alpha) of a stats row within one configuration; None = null."""


def _none_if_na(value: object) -> object:
    missing = value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
    return None if missing else value


@dataclass(frozen=True, eq=False)
class ConfigView:
    """The stats rows of one configuration, indexed once by (kind, layer, epoch, alpha)."""

    key: ConfigKey
    rows: pd.DataFrame
    index: dict[RowKey, pd.Series] = field(repr=False)
    layers: tuple[str, ...]
    """Layer names (non-null) in forward order (by ``layer_index``), then its groups of layers
    (no ``layer_index``; :func:`layer_sort_key`'s order: a stage, then its blocks)."""
    last_epoch: int | None
    """The trained network's epoch: the largest ``none`` checkpoint."""
    depth: dict[str, float] = field(default_factory=dict, repr=False)
    """Relative depth of each layer whose position is known (``layer_index / (n_layers - 1)``)."""

    @classmethod
    def of(cls, key: ConfigKey, rows: pd.DataFrame) -> ConfigView:
        """The view of ``rows`` with the stored BatchNorm statistics (``recalibrate`` 0)."""
        rows = rows[rows["recalibrate"] == 0]
        index: dict[RowKey, pd.Series] = {}
        for _, row in rows.iterrows():
            epoch = _none_if_na(row["epoch"])
            alpha = _none_if_na(row["alpha"])
            index[(row["kind"], _none_if_na(row["layer"]), None if epoch is None else int(epoch),
                   None if alpha is None else float(alpha))] = row
        named = rows.dropna(subset=["layer"]).drop_duplicates("layer")
        names, indexes, depths = named["layer"], named["layer_index"], named["depth"]
        positions = {layer: layer_position(layer, i) for layer, i in zip(names, indexes, strict=True)}
        layers = tuple(sorted(positions, key=positions.__getitem__))
        depth = {layer: float(d) for layer, d in zip(names, depths, strict=True) if not pd.isna(d)}
        epochs = rows.loc[rows["kind"] == "none", "epoch"].dropna()
        return cls(key, rows, index, layers, None if epochs.empty else int(epochs.max()), depth)

    def row(
        self, kind: str, layer: str | None = None, epoch: int | None = None, alpha: float | None = None
    ) -> pd.Series | None:
        """The stats row with these keys (None = null), or None when it was not measured."""
        return self.index.get((kind, layer, epoch, alpha))

    def has(self, kind: str) -> bool:
        return any(key[0] == kind for key in self.index)

    @property
    def by_depth(self) -> tuple[str, ...]:
        """The layers that have a place on the relative-depth axis: those of known depth, in forward
        order (not groups, which span depths); all of :attr:`layers` where no depth is known (a
        store whose layer positions could not be found)."""
        placed = tuple(layer for layer in self.layers if layer in self.depth)
        return placed or self.layers

    @property
    def single_seed(self) -> bool:
        return bool((self.rows["n"] < 2).any())


def config_views(stats: pd.DataFrame) -> list[ConfigView]:
    """One view per configuration in a stats table, in its row order (the one order of
    configurations)."""
    views = []
    for (sweep, config_id), rows in stats.groupby(["sweep", "config_id"], sort=False):
        first = rows.iloc[0]
        widths = tuple(int(w) for w in first["widths"])
        key = ConfigKey(sweep, config_id, first["config_name"], first["dataset"], first["model"], widths)
        views.append(ConfigView.of(key, rows))
    return views


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Student-t 95% interval of a mean; NaN where n < 2 (no spread can be estimated)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = st.t.ppf(0.975, np.maximum(n - 1, 1))
        half = np.where(n > 1, quantile * np.asarray(std, dtype=float) / np.sqrt(n), np.nan)
    return mean - half, mean + half


def clip_interval(
    low: np.ndarray, high: np.ndarray, lowest: float | np.ndarray, highest: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``low`` and ``high`` cut to [``lowest``, ``highest``], and where either was cut
    (False where the interval is NaN)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    with np.errstate(invalid="ignore"):
        clipped = (low < lowest) | (high > highest)
    return np.clip(low, lowest, highest), np.clip(high, lowest, highest), clipped


def trials_frame(trials: pa.Table) -> pd.DataFrame:
    """One row per (trial, sweep) with its configuration's ``config_name`` and ``config_rank``
    (position in the one order of configurations), ``seed``, ``epochs`` and ``trial_test_acc``."""
    trials = with_config_ids(trials)
    names = names_of_trials(trials.select(list(TRIAL_COLUMNS)).to_pylist())
    rank = {key: position for position, key in enumerate(names)}
    frame = trials.select(
        ["trial_id", "sweep", "config_id", "dataset", "model", "widths", "seed", "epochs", "test_acc"]
    ).to_pandas()
    frame["widths"] = frame["widths"].map(lambda w: tuple(int(x) for x in w))
    keys = list(zip(frame["sweep"], frame["config_id"], strict=True))
    frame["config_name"] = [names[k] for k in keys]
    frame["config_rank"] = [rank[k] for k in keys]
    return frame.rename(columns={"test_acc": "trial_test_acc"})


def _swaps_frame(swaps: pa.Table) -> pd.DataFrame:
    columns = ["trial_id", "kind", "layer", "epoch", "alpha", "test_acc", "recalibrate"]
    frame = swaps.select(columns).to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    frame["recalibrate"] = frame["recalibrate"].fillna(0)  # rows written before v3
    return frame


def compute_stats(
    trials: pa.Table, swaps: pa.Table, axes: SweepAxes | None = None, networks: LayerOrder | None = None
) -> pd.DataFrame:
    """Aggregate swap accuracies over the seeds of each configuration; columns ``STATS_COLUMNS``,
    then one per grid axis in ``axes`` of the sweeps in ``trials`` (``{sweep: keys}``).

    Only swap rows of trials present in ``trials`` count (a swaps file without
    its trial row is an unfinished trial). ``widths`` is a list of ints per row,
    ``layer`` and ``alpha`` are null (NaN) where the swaps table has null,
    ``epoch`` is a nullable integer. Rows are sorted by sweep, configuration
    (the one order of :func:`orchestrator.catalog.naming.name_configs`), kind
    (none, reinit, rerandomize, transplant, interpolate), ``layer_index``, epoch, alpha,
    recalibrate. ``networks`` gives each configuration's layers
    (:func:`orchestrator.report.layer_order.layer_order`); without it, or for a layer it does
    not know, ``layer_index`` and ``depth`` are null and such layers sort by name after the
    known ones.
    """
    merged = _swaps_frame(swaps).merge(trials_frame(trials), on="trial_id", how="inner")
    if merged.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATS_COLUMNS})
    trained_rows = merged[
        (merged["kind"] == "none") & (merged["epoch"] == merged["epochs"]) & (merged["recalibrate"] == 0)
    ]
    trained = trained_rows.groupby("trial_id")["test_acc"].mean()
    merged["trained"] = merged["trial_id"].map(trained).fillna(merged["trial_test_acc"])

    per_seed = merged.groupby(GROUP_KEYS + ["seed"], dropna=False, sort=False).agg(
        acc=("test_acc", "mean"),
        trained=("trained", "first"),
        **{column: (column, "first") for column in DESCRIPTIVE},
    )
    per_seed["drop"] = per_seed["trained"] - per_seed["acc"]
    grouped = per_seed.groupby(level=GROUP_KEYS, dropna=False, sort=False).agg(
        n=("acc", "size"),
        mean_acc=("acc", "mean"),
        std_acc=("acc", "std"),
        min_acc=("acc", "min"),
        max_acc=("acc", "max"),
        mean_drop=("drop", "mean"),
        std_drop=("drop", "std"),
        mean_trained=("trained", "mean"),
        **{column: (column, "first") for column in DESCRIPTIVE},
    )
    out = grouped.reset_index()
    n = out["n"].to_numpy()
    low, high = t_interval(out["mean_acc"].to_numpy(), out["std_acc"].to_numpy(), n)
    out["ci95_low"], out["ci95_high"], out["ci95_clipped"] = clip_interval(low, high, 0.0, 1.0)
    low, high = t_interval(out["mean_drop"].to_numpy(), out["std_drop"].to_numpy(), n)
    trained = out["mean_trained"].to_numpy(dtype=float)
    out["drop_ci95_low"], out["drop_ci95_high"], out["drop_ci95_clipped"] = clip_interval(
        low, high, trained - 1.0, trained
    )
    out["n"] = out["n"].astype("int64")
    out["epoch"] = out["epoch"].astype(pd.Int32Dtype())
    out["layer_index"], out["depth"] = _positions(out, networks or {})
    return with_axis_columns(_sorted(out)[STATS_COLUMNS].reset_index(drop=True), trials, axes)


def _positions(frame: pd.DataFrame, networks: LayerOrder) -> tuple[pd.Series, pd.Series]:
    """``layer_index`` (nullable int32) and ``depth`` (float, NaN) of each row's layer."""
    index, depth = [], []
    for config_id, layer in zip(frame["config_id"], frame["layer"], strict=True):
        network = networks.get(config_id)
        position = network.index(layer) if network is not None and isinstance(layer, str) else None
        index.append(position)
        depth.append(np.nan if position is None else network.depth(layer))
    return pd.Series(index, index=frame.index, dtype=pd.Int32Dtype()), pd.Series(depth, index=frame.index)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    order = frame.assign(
        _kind=frame["kind"].map(
            lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)
        ),
        _layer=[
            layer_position(layer, i) for layer, i in zip(frame["layer"], frame["layer_index"], strict=True)
        ],
    )
    order = order.sort_values(
        ["sweep", "config_rank", "_kind", "kind", "_layer", "epoch", "alpha", "recalibrate"],
        na_position="first",
        kind="stable",
    )
    order["widths"] = order["widths"].map(list)
    return order


def stats_to_arrow(stats: pd.DataFrame) -> pa.Table:
    """The stats table as Arrow with ``STATS_SCHEMA``, then its axis columns."""
    table = pa.Table.from_pandas(stats[STATS_COLUMNS], schema=STATS_SCHEMA, preserve_index=False)
    return with_axis_arrays(table, stats, STATS_COLUMNS)


def stats_to_csv(stats: pd.DataFrame) -> str:
    """The stats table as CSV text; ``widths`` written as ``"256-128-64"``, nulls empty."""
    frame = stats[STATS_COLUMNS].copy()
    frame["widths"] = frame["widths"].map(widths_label)
    frame = frame.join(axis_csv_frame(stats, STATS_COLUMNS))
    return frame.to_csv(index=False, na_rep="", lineterminator="\n")
