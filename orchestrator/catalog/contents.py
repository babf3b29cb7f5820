"""What a store holds: complete trials, each sweep's expected grid, what is missing.

``load_contents`` is the one reader used by ``layerswap ls`` and ``layerswap
report``. A trial is complete when its trial row exists (``index/trials``);
swap rows of any other trial are ignored and it counts as missing. A sweep's
expected trials are the union of the ``trial_ids`` of its stored configs
(``sweeps/<sweep>/<hash>.json``). Trial ids are hashes of the spec, so two
sweeps may share a trial: a trial belongs to the sweep named in its row and to
every sweep whose grid lists it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.catalog.naming import TRIAL_COLUMNS, names_of_trials
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec
from trainables.store import Store, StoreError, layout

REQUIRED = {
    "trials": ("trial_id", "sweep", "dataset", "model", "widths", "seed", "epochs", "test_acc"),
    "swaps": ("trial_id", "kind", "test_acc"),
}
"""Columns that must be non-null in every row; a null means a file of another schema."""


@dataclass(frozen=True)
class SweepStatus:
    """Completion of one sweep: ``expected`` is None when no config of it is stored."""

    sweep: str
    complete: int
    expected: int | None
    missing: tuple[str, ...]


@dataclass(frozen=True)
class StoreContents:
    """The complete trials (one row per trial and sweep it belongs to, every ``config_id`` set)
    and their swaps."""

    trials: pa.Table
    swaps: pa.Table
    sweeps: tuple[SweepStatus, ...]
    unfinished: tuple[str, ...]
    """Trial ids with swap rows but no trial row (running, or crashed)."""


def load_contents(store: Store, sweep: str | None = None) -> StoreContents:
    """Read the trials and swaps indexes and the sweep configs, restricted to ``sweep``.

    Raises StoreError with one line when ``store`` is not a layerswap store, a
    file does not match its table's schema, or ``sweep`` is unknown.
    """
    if not store.exists(layout.index_dir("trials")) and not store.exists(layout.SWEEPS_DIR):
        raise StoreError(f"{store.uri} is not a layerswap store (no index/trials)")
    trials = with_config_ids(_read_checked(store, "trials"))
    complete_ids = set(trials.column("trial_id").to_pylist())
    expected = _expected_trials(store)
    trials = _assign_sweeps(trials, expected)
    known = sorted(set(expected) | set(trials.column("sweep").to_pylist()))
    started = store.index_trial_ids("swaps")
    unfinished = started - complete_ids
    if sweep is not None:
        if sweep not in known:
            names = ", ".join(known) or "none"
            raise StoreError(
                f"{store.uri}: no sweep named {sweep!r} (sweeps in the store: {names})"
            )
        trials = trials.filter(pc.equal(trials.column("sweep"), sweep))
        known = [sweep]
        unfinished &= expected.get(sweep, set())
    swaps = with_recalibrate(_read_checked(store, "swaps"))
    swaps = swaps.filter(pc.is_in(swaps.column("trial_id"), trials.column("trial_id").unique()))
    swaps = one_row_per_key(swaps)
    statuses = tuple(_status(name, trials, expected.get(name), complete_ids) for name in known)
    return StoreContents(trials, swaps, statuses, tuple(sorted(unfinished)))


def config_id_of(spec_json: str) -> str:
    """The configuration id of a stored spec (also of a version-1 spec, whose
    measurement fields are dropped first)."""
    return TrialSpec.from_dict(json.loads(spec_json)).config_id


def with_config_ids(trials: pa.Table) -> pa.Table:
    """``trials`` with every ``config_id`` set: trial rows of store version 1 have none,
    so it is computed from their ``spec_json``."""
    column = trials.column("config_id")
    if not column.null_count:
        return trials
    specs = trials.column("spec_json").to_pylist()
    filled = [
        config_id if config_id is not None else config_id_of(spec_json)
        for config_id, spec_json in zip(column.to_pylist(), specs, strict=True)
    ]
    index = trials.schema.get_field_index("config_id")
    return trials.set_column(index, "config_id", pa.array(filled, pa.string()))
def is_diverged(trials: pa.Table) -> pa.Array:
    """Per trial row, whether its network diverged (``status`` diverged; older rows have no status)."""
    return pc.fill_null(pc.equal(trials.column("status"), "diverged"), False)


def without_diverged(contents: StoreContents) -> StoreContents:
    """``contents`` without the networks that diverged (statistics pool trained networks only)."""
    trials = contents.trials.filter(pc.invert(is_diverged(contents.trials)))
    swaps = contents.swaps.filter(pc.is_in(contents.swaps.column("trial_id"), trials.column("trial_id")))
    return StoreContents(trials, swaps, contents.sweeps, contents.unfinished)


def describe_diverged(trials: pa.Table) -> str | None:
    """One sentence naming each configuration with networks that diverged and their seeds, e.g.
    ``2 network(s) diverged (non-finite training loss; no swaps measured), left out of every
    statistic: tiny lr 1e+30 seed(s) 0 at epoch 1, 1 at epoch 2``; None when none did.

    Configurations are named as ``ls`` and the report name them
    (:func:`orchestrator.catalog.naming.names_of_trials`)."""
    rows = trials.filter(is_diverged(trials)).to_pylist()
    if not rows:
        return None
    names = names_of_trials(trials.select(list(TRIAL_COLUMNS)).to_pylist())
    configs: dict[tuple[str, str], list[str]] = {}
    for row in sorted(rows, key=lambda r: (r["sweep"], r["config_id"] or "", r["seed"])):
        key = (row["sweep"], row["config_id"])
        configs.setdefault(key, []).append(f"{row['seed']} at epoch {row['diverged_epoch']}")
    parts = [f"{sweep} {names[(sweep, config)]} seed(s) {', '.join(seeds)}"
             for (sweep, config), seeds in configs.items()]
    return (f"{len(rows)} network(s) diverged (non-finite training loss; no swaps measured), left out "
            f"of every statistic: {'; '.join(parts)}")


SWAP_KEY_COLUMNS = ["trial_id", "kind", "layer", "epoch", "alpha", "draw", "recalibrate"]


def with_recalibrate(swaps: pa.Table) -> pa.Table:
    """``swaps`` with ``recalibrate`` 0 where a row written before v3 has none."""
    index = swaps.schema.get_field_index("recalibrate")
    filled = pc.fill_null(swaps.column("recalibrate"), pa.scalar(0, pa.int32()))
    return swaps.set_column(index, "recalibrate", filled)


def one_row_per_key(swaps: pa.Table) -> pa.Table:
    """The swaps rows with each (trial_id, kind, layer, epoch, alpha, draw, recalibrate) once.

    Two writers that measured the same key at once leave two rows (``verify``
    names them); both are measurements of the same fact, and the first is kept.
    """
    frame = swaps.to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)
    unique = frame.drop_duplicates(subset=SWAP_KEY_COLUMNS, keep="first")
    if len(unique) == len(frame):
        return swaps
    return pa.Table.from_pandas(unique, schema=swaps.schema, preserve_index=False)


def _read_checked(store: Store, table: str) -> pa.Table:
    data = store.read_index(table)
    for column in REQUIRED[table]:
        if data.column(column).null_count:
            raise StoreError(
                f"{store.uri}: index/{table} has rows without {column!r}: "
                f"its files do not match the {table} schema"
            )
    return data


@dataclass(frozen=True)
class SweepRecord:
    """One stored ``sweeps/<sweep>/<hash>.json``: the sweep, its grid's trial ids, its config."""

    sweep: str
    trial_ids: tuple[str, ...]
    config: dict


def sweep_records(store: Store) -> list[SweepRecord]:
    """Every stored sweep record; one that is not a record is a StoreError (one line)."""
    records = []
    for relpath in store.list_files(layout.SWEEPS_DIR):
        if not layout.is_sweep_record(relpath):
            continue
        try:
            record = json.loads(store.read_bytes(relpath))
            name, ids, config = record["sweep"], record["trial_ids"], record.get("config") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise StoreError(f"{store.path(relpath)} is not a sweep record ({err})") from None
        if (
            not isinstance(name, str)
            or not isinstance(ids, list)
            or not all(isinstance(i, str) for i in ids)
            or not isinstance(config, dict)
        ):
            raise StoreError(
                f"{store.path(relpath)} is not a sweep record: 'sweep' must be a name, 'trial_ids' "
                "a list of trial ids and 'config' a mapping"
            )
        records.append(SweepRecord(name, tuple(ids), config))
    return records


def _expected_trials(store: Store) -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {}
    for record in sweep_records(store):
        expected.setdefault(record.sweep, set()).update(record.trial_ids)
    return expected


def recorded_plans(store: Store) -> dict[str, MeasurementPlan]:
    """Per sweep, the union of the measurement plans its stored configs asked for."""
    plans: dict[str, MeasurementPlan] = {}
    for record in sweep_records(store):
        try:
            plan = MeasurementPlan.from_dict(record.config)
        except (KeyError, TypeError, ValueError):
            continue  # a record without a plan (written by hand): nothing to add
        plans[record.sweep] = plans[record.sweep].union(plan) if record.sweep in plans else plan
    return plans


def _assign_sweeps(trials: pa.Table, expected: dict[str, set[str]]) -> pa.Table:
    """One row per (trial, sweep it belongs to), the ``sweep`` column set accordingly."""
    parts = [trials]
    for name, ids in sorted(expected.items()):
        others = trials.filter(
            pc.and_(
                pc.is_in(trials.column("trial_id"), pa.array(sorted(ids), pa.string())),
                pc.not_equal(trials.column("sweep"), name),
            )
        )
        if others.num_rows:
            index = trials.schema.get_field_index("sweep")
            parts.append(
                others.set_column(index, "sweep", pa.array([name] * others.num_rows, pa.string()))
            )
    return pa.concat_tables(parts)


def _status(
    name: str, trials: pa.Table, expected: set[str] | None, complete_ids: set[str]
) -> SweepStatus:
    mine = trials.filter(pc.equal(trials.column("sweep"), name))
    if expected is None:
        return SweepStatus(name, mine.num_rows, None, ())
    done = expected & complete_ids
    return SweepStatus(name, len(done), len(expected), tuple(sorted(expected - done)))
