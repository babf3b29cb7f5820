"""Module criticality per layer and what it cost, per search settings, from a store's criticality rows.

For each criticality setting found in the store (rows of different settings
are never pooled) and each layer: the geometric mean of the criticality over
the networks and its 95% interval (mean and Student-t interval of log10
values, back-transformed; NaN scores, where no alpha passed, left out and
counted), the fraction of rows censored, and per network the seconds and the
(alpha, sigma) evaluations its layers took. Run it on a store measured under
several settings, e.g. ``configs/movement.yaml`` measured by ``layerswap
analyze STORE --criticality ...`` once per setting:

    python -m benchmarks.criticality_table STORE [--sweep NAME]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import scipy.stats

from benchmarks.common import table
from orchestrator.report.layer_stats import settings_label
from orchestrator.report.stats import layer_sort_key
from trainables.store import Store


def geometric_interval(values: pd.Series) -> tuple[float, float, float]:
    """Geometric mean and the back-transformed 95% t-interval of log10 ``values`` (all > 0)."""
    logs = np.log10(values.to_numpy())
    mean = logs.mean()
    if len(logs) < 2:
        return 10**mean, math.nan, math.nan
    half = scipy.stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    return 10**mean, 10 ** (mean - half), 10 ** (mean + half)


def criticality_table(rows: pd.DataFrame) -> tuple[list[list], list[list]]:
    """(per settings and layer, per settings) rows of the two tables printed by :func:`main`."""
    rows = rows.assign(settings=rows.apply(settings_label, axis=1))
    per_layer, per_network = [], []
    for label, chosen in rows.groupby("settings", sort=True):
        for layer in sorted(chosen["layer"].unique(), key=layer_sort_key):
            values = chosen[chosen["layer"] == layer]
            finite = values["criticality"][np.isfinite(values["criticality"]) & (values["criticality"] > 0)]
            mean, low, high = geometric_interval(finite) if len(finite) else (math.nan,) * 3
            per_layer.append([label, layer, len(values), *(f"{value:.3g}" for value in (mean, low, high)),
                              f"{values['censored'].mean():.0%}", int(values["criticality"].isna().sum())])
        networks = chosen.groupby("trial_id").agg(
            seconds=("seconds", "sum"), pairs=("pairs_evaluated", "sum")
        )
        per_network.append([label, len(networks), networks["seconds"].mean(), networks["seconds"].min(),
                            networks["seconds"].max(), networks["pairs"].mean(), networks["pairs"].min(),
                            networks["pairs"].max(), f"{chosen['censored'].mean():.0%}"])
    return per_layer, per_network


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="store path or URI")
    parser.add_argument("--sweep", help="only the networks of this sweep")
    args = parser.parse_args(argv)
    store = Store.open(args.store)
    rows = store.read_index("criticality").to_pandas()
    if args.sweep is not None:
        trials = store.read_index("trials").to_pandas()
        rows = rows[rows["trial_id"].isin(trials.loc[trials["sweep"] == args.sweep, "trial_id"])]
    per_layer, per_network = criticality_table(rows)
    print(table(["settings", "layer", "n", "geo mean", "95% low", "95% high", "censored", "no pass"],
                per_layer))
    print()
    print(table(["settings", "networks", "s/network", "min s", "max s", "pairs/network", "min", "max",
                 "censored"], per_network))


if __name__ == "__main__":
    main()
