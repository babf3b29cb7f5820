"""Per-layer statistics across seeds (DESIGN.md, "CLI": the `stats` table).

Units and semantics:

- Accuracies are fractions in [0, 1]; the report prints them as percentage points.
- One stats row per (sweep, dataset, model, widths, kind, layer, epoch, alpha).
  The unit of replication is the trial (one seed): when a trial has several
  measurements in a group (``rerandomize`` draws 0..k-1) they are first averaged
  within the trial, so ``n`` counts seeds and the interval is over seeds.
- ``std_acc`` uses ddof=1 (null for n = 1); ``ci95_low``/``ci95_high`` are the
  Student-t 95% interval of the mean; for n = 1 it is the point itself.
- The drop is paired by seed: drop = (that trial's trained accuracy) - accuracy,
  positive = worse than trained. The trained accuracy is the trial's ``none``
  row at epoch == ``epochs``, or the trial row's ``test_acc`` if that row is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats as st

GROUP_KEYS = ["sweep", "dataset", "model", "widths", "kind", "layer", "epoch", "alpha"]
STATS_COLUMNS = GROUP_KEYS + [
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
]

STATS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
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
    ]
)
"""Arrow schema of ``stats.parquet`` (``widths`` stays a list<int32> there)."""

KIND_ORDER = ("none", "reinit", "rerandomize", "transplant", "interpolate")

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def layer_sort_key(layer: str) -> tuple[str, int]:
    """Sort ``fc2`` before ``fc10``: by name prefix, then by its trailing number."""
    match = _TRAILING_NUMBER.match(layer)
    return (match.group(1), int(match.group(2))) if match else (layer, -1)


def widths_label(widths: tuple[int, ...] | list[int]) -> str:
    """``[256, 128, 64]`` -> ``"256-128-64"`` (the form used in stats.csv and file names)."""
    return "-".join(str(int(w)) for w in widths)


@dataclass(frozen=True)
class ConfigKey:
    """One width configuration of one sweep: the unit of a heatmap and a results table."""

    sweep: str
    dataset: str
    model: str
    widths: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.sweep} · {self.dataset} · {self.model} · widths {widths_label(self.widths)}"


def config_keys(stats: pd.DataFrame) -> list[ConfigKey]:
    """The width configurations present in a stats table, in its row order."""
    seen = dict.fromkeys(
        ConfigKey(r.sweep, r.dataset, r.model, tuple(int(w) for w in r.widths))
        for r in stats[["sweep", "dataset", "model", "widths"]].itertuples(index=False)
    )
    return list(seen)


def config_rows(stats: pd.DataFrame, key: ConfigKey) -> pd.DataFrame:
    """The stats rows of one width configuration."""
    mask = (
        (stats["sweep"] == key.sweep)
        & (stats["dataset"] == key.dataset)
        & (stats["model"] == key.model)
        & stats["widths"].map(lambda w: tuple(int(x) for x in w) == key.widths)
    )
    return stats[mask]


def layers_of(rows: pd.DataFrame) -> list[str]:
    """Layer names (non-null) in depth order."""
    return sorted(set(rows["layer"].dropna()), key=layer_sort_key)


def find_row(
    rows: pd.DataFrame, kind: str, layer: str | None = None, epoch: int | None = None
) -> pd.Series | None:
    """The single stats row with ``kind``, ``layer`` and ``epoch`` (None = null), alpha null."""
    mask = (rows["kind"] == kind) & rows["alpha"].isna()
    mask &= rows["layer"].isna() if layer is None else rows["layer"] == layer
    mask &= rows["epoch"].isna() if epoch is None else rows["epoch"] == epoch
    found = rows[mask.fillna(False).astype(bool)]
    return None if found.empty else found.iloc[0]


def last_epoch(rows: pd.DataFrame) -> int | None:
    """The trained network's epoch in a configuration: the largest ``none`` checkpoint."""
    epochs = rows.loc[rows["kind"] == "none", "epoch"].dropna()
    return None if epochs.empty else int(epochs.max())


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Student-t 95% interval of a mean; for n = 1 (or zero spread) the point itself."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        quantile = st.t.ppf(0.975, np.maximum(n - 1, 1))
        half = np.where(n > 1, quantile * np.asarray(std, dtype=float) / np.sqrt(n), 0.0)
    return mean - half, mean + half


def _trials_frame(trials: pa.Table) -> pd.DataFrame:
    frame = trials.select(
        ["trial_id", "sweep", "dataset", "model", "widths", "epochs", "test_acc"]
    ).to_pandas()
    frame["widths"] = frame["widths"].map(lambda w: tuple(int(x) for x in w))
    return frame.rename(columns={"test_acc": "trial_test_acc"})


def _swaps_frame(swaps: pa.Table) -> pd.DataFrame:
    return swaps.select(["trial_id", "kind", "layer", "epoch", "alpha", "test_acc"]).to_pandas(
        types_mapper={pa.int32(): pd.Int32Dtype()}.get
    )


def compute_stats(trials: pa.Table, swaps: pa.Table) -> pd.DataFrame:
    """Aggregate swap accuracies over seeds; columns are ``STATS_COLUMNS``.

    Only swap rows of trials present in ``trials`` count (a swaps file without
    its trial row is an unfinished trial). ``widths`` is a list of ints per row,
    ``layer`` and ``alpha`` are null (NaN) where the swaps table has null,
    ``epoch`` is a nullable integer. Rows are sorted by configuration, kind
    (none, reinit, rerandomize, transplant, interpolate), layer depth, epoch, alpha.
    """
    merged = _swaps_frame(swaps).merge(_trials_frame(trials), on="trial_id", how="inner")
    if merged.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in STATS_COLUMNS})
    trained_rows = merged[(merged["kind"] == "none") & (merged["epoch"] == merged["epochs"])]
    trained = trained_rows.groupby("trial_id")["test_acc"].mean()
    merged["trained"] = merged["trial_id"].map(trained).fillna(merged["trial_test_acc"])

    per_trial = merged.groupby(GROUP_KEYS + ["trial_id"], dropna=False, sort=False).agg(
        acc=("test_acc", "mean"), trained=("trained", "first")
    )
    per_trial["drop"] = per_trial["trained"] - per_trial["acc"]
    grouped = per_trial.groupby(level=GROUP_KEYS, dropna=False, sort=False).agg(
        n=("acc", "size"),
        mean_acc=("acc", "mean"),
        std_acc=("acc", "std"),
        min_acc=("acc", "min"),
        max_acc=("acc", "max"),
        mean_drop=("drop", "mean"),
        std_drop=("drop", "std"),
    )
    out = grouped.reset_index()
    n = out["n"].to_numpy()
    out["ci95_low"], out["ci95_high"] = t_interval(
        out["mean_acc"].to_numpy(), out["std_acc"].to_numpy(), n
    )
    out["drop_ci95_low"], out["drop_ci95_high"] = t_interval(
        out["mean_drop"].to_numpy(), out["std_drop"].to_numpy(), n
    )
    out["n"] = out["n"].astype("int64")
    out["epoch"] = out["epoch"].astype(pd.Int32Dtype())
    return _sorted(out)[STATS_COLUMNS].reset_index(drop=True)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    order = frame.assign(
        _widths=frame["widths"].map(tuple),
        _kind=frame["kind"].map(
            lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER)
        ),
        _layer=frame["layer"].map(lambda v: layer_sort_key(v) if isinstance(v, str) else ("", -2)),
    )
    order = order.sort_values(
        ["sweep", "dataset", "model", "_widths", "_kind", "kind", "_layer", "epoch", "alpha"],
        na_position="first",
        kind="stable",
    )
    order["widths"] = order["widths"].map(list)
    return order


def stats_to_arrow(stats: pd.DataFrame) -> pa.Table:
    """The stats table as Arrow with ``STATS_SCHEMA`` (extra columns dropped)."""
    return pa.Table.from_pandas(stats[STATS_COLUMNS], schema=STATS_SCHEMA, preserve_index=False)


def stats_to_csv(stats: pd.DataFrame) -> str:
    """The stats table as CSV text; ``widths`` written as ``"256-128-64"``, nulls empty."""
    frame = stats[STATS_COLUMNS].copy()
    frame["widths"] = frame["widths"].map(widths_label)
    return frame.to_csv(index=False, na_rep="", lineterminator="\n")
