"""The grid axes of each sweep, and each configuration's value on them (the axis columns).

A sweep's axes are the keys of the ``grid:`` blocks its stored records hold
(``sweeps/<sweep>/<hash>.json`` keeps each run's config in its raw form, its
``grid`` included), in the order the records give them; a sweep without a
grid, or without a record, has none. A configuration's value on an axis is
that field of its training spec, defaults included (read from its trials'
``spec_json``): ``optimizer.lr`` a number, ``precision`` a string,
``checkpoints`` a list; a whole block used as an axis (``optimizer``) is its
canonical JSON.

``stats`` and ``layer_stats`` gain one column per axis of any sweep in them,
named by the axis key, after the columns of their schema; it is null in the
rows of sweeps without that axis. ``dataset`` and ``model`` are columns of
both tables already: as axes they are read from there and add none.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence

import pandas as pd
import pyarrow as pa

from orchestrator.catalog.contents import sweep_records, with_config_ids
from orchestrator.catalog.naming import format_value
from orchestrator.config.grid_axes import grid_keys
from trainables.spec import TrialSpec, canonical_bytes, canonical_fields
from trainables.store import Store

SweepAxes = Mapping[str, tuple[str, ...]]
"""``{sweep: (axis key, ...)}``: the grid axes of each sweep that has any."""

def sweep_axes(store: Store) -> dict[str, tuple[str, ...]]:
    """The grid axes of every sweep of ``store`` that has any (from its stored records; one that is
    not a record is a StoreError). Keys that are no grid key (a record written by hand) are left out."""
    known = set(grid_keys())
    axes: dict[str, dict[str, None]] = {}
    for record in sweep_records(store):
        grid = record.config.get("grid")
        if isinstance(grid, dict):
            keys = axes.setdefault(record.sweep, {})
            keys.update({str(key): None for key in grid if key in known})
    return {sweep: tuple(keys) for sweep, keys in sorted(axes.items()) if keys}


def axis_value(spec: TrialSpec, key: str) -> object:
    """The value of dotted ``key`` (``optimizer.lr``) in ``spec``: a tuple as a tuple, a block as its
    canonical JSON."""
    value: object = spec
    for name in key.split("."):
        value = getattr(value, name)
    if dataclasses.is_dataclass(value):
        return canonical_bytes(canonical_fields(value)).decode("utf-8")
    return value


def _values_of_configs(trials: pa.Table, axes: SweepAxes) -> dict[tuple[str, str], dict[str, object]]:
    """``{(sweep, config_id): {key: value}}`` for the sweeps of ``trials`` that have axes (no value
    for a trial row without ``spec_json``)."""
    wanted = [sweep for sweep in dict.fromkeys(trials.column("sweep").to_pylist()) if axes.get(sweep)]
    if not wanted:
        return {}
    rows = with_config_ids(trials).select(["sweep", "config_id", "spec_json"]).to_pylist()
    values: dict[tuple[str, str], dict[str, object]] = {}
    specs: dict[str, TrialSpec | None] = {}
    for row in rows:
        key = (row["sweep"], row["config_id"])
        if row["sweep"] not in wanted or key in values:
            continue
        if row["config_id"] not in specs:
            text = row["spec_json"]
            specs[row["config_id"]] = TrialSpec.from_dict(json.loads(text)) if text else None
        spec = specs[row["config_id"]]
        values[key] = {axis: None if spec is None else axis_value(spec, axis) for axis in axes[row["sweep"]]}
    return values


def with_axis_columns(frame: pd.DataFrame, trials: pa.Table, axes: SweepAxes | None) -> pd.DataFrame:
    """``frame`` (rows with ``sweep`` and ``config_id``) with one column per axis of its sweeps, after
    its own columns (see the module docstring); ``frame`` itself when none of its sweeps has an axis."""
    values = _values_of_configs(trials, axes or {}) if len(frame) else {}
    keys = [key for mine in values.values() for key in mine if key not in frame.columns]
    if not keys:
        return frame
    out = frame.copy()
    configs = list(zip(out["sweep"], out["config_id"], strict=True))
    for key in dict.fromkeys(keys):
        out[key] = pd.Series([values.get(config, {}).get(key) for config in configs], index=out.index,
                             dtype=object)
    return out


def axis_columns(frame: pd.DataFrame, own: Sequence[str]) -> list[str]:
    """The axis columns of a stats table: its columns after ``own``, the columns of its schema."""
    return [column for column in frame.columns if column not in own]


def _plain(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def axis_array(values: pd.Series) -> pa.Array:
    """One axis column as Arrow: its values' own type (double, string, list<int64>, ...), or their
    text (:func:`orchestrator.catalog.naming.format_value`) where sweeps disagree on the type."""
    plain = [_plain(value) for value in values]
    try:
        return pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if value is None else format_value(value) for value in plain], pa.string())


def with_axis_arrays(table: pa.Table, frame: pd.DataFrame, own: Sequence[str]) -> pa.Table:
    """``table`` (``frame``'s own columns as Arrow) with ``frame``'s axis columns appended."""
    for column in axis_columns(frame, own):
        table = table.append_column(column, axis_array(frame[column]))
    return table


def axis_csv_frame(frame: pd.DataFrame, own: Sequence[str]) -> pd.DataFrame:
    """``frame``'s axis columns as CSV writes them: lists like widths (``0-3``), nulls empty."""
    return pd.DataFrame({
        column: [None if (plain := _plain(value)) is None else
                 format_value(plain) if isinstance(plain, list) else plain for value in frame[column]]
        for column in axis_columns(frame, own)
    }, index=frame.index)
