"""``layerswap verify``: check every complete trial's files against the index.

For each trial with a trial row: ``spec.json`` exists, its sha256 starts with
the trial id and it equals the row's ``spec_json``; the trial has swaps and
weights index files; every checkpoint epoch of the trial has weights rows; and
every weights file exists and holds exactly the tensors its ``index/weights``
rows describe (name, shape, dtype, byte count, sha256 of the raw bytes); and
no measurement of the trial is stored twice (below).
Trials without a trial row are unfinished and not checked.

Every index file of a checked trial (and every index file name) is opened
and checked on its own: a readable Parquet file, columns of the table's
schema, rows keyed by the trial id in its name (one trial row; weights rows
pointing at that trial's epoch files; swap rows of a known kind). No key is
stored twice for one trial: a swap (kind, layer, epoch, alpha, draw), a
movement row (epoch, layer) or a criticality row (layer, search and its settings; a row
without ``search`` is a grid row);
readers keep the first, so a duplicate is a sign of two writers, and verify
names the files that hold it. A network that diverged (``status`` diverged)
has checkpoints only before the epoch it diverged in. Trial ids
are checked to be 16 lowercase hex characters before any becomes a path, so
a crafted row cannot make verify read outside the store.

What ``verify --repair`` may mend (duplicates, rows measured later from
weights that no longer match their index) is :mod:`orchestrator.catalog.repair`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
from safetensors import SafetensorError

from trainables.measure.checked_weights import differences
from trainables.plan import SWAP_KINDS, row_key
from trainables.store import Store, StoreError, layout
from trainables.store.schemas import TABLE_SCHEMAS

KINDS = frozenset({"none", "interpolate", *SWAP_KINDS})
SWAP_KEY = ("kind", "layer", "epoch", "alpha", "draw")
"""The key columns every swaps file has (``recalibrate``, absent before v3, reads as 0)."""
MEASUREMENT_KEYS = {
    "swaps": SWAP_KEY,
    "layers": ("epoch", "layer"),
    "criticality": (
        "layer", "search", "n_alpha", "n_sigma", "sigma_max", "precision", "rel_sigma_lo", "rel_sigma_hi",
        "noise_samples", "rtol", "subset_size",
    ),
}
"""Per measurement table, the columns that key one row of a trial."""
LATER_KEY_COLUMNS = {"search": "grid", "precision": None, "rel_sigma_lo": None, "rel_sigma_hi": None}
"""Key columns added after files were written without them, and what such a file's rows hold
(criticality rows without ``search`` are grid rows)."""
KEY_COLUMNS = {
    "trials": ("trial_id", "spec_json", "checkpoints"),
    "weights": ("trial_id", "epoch", "tensor", "path"),
    **{
        table: ("trial_id", *(c for c in key if c not in LATER_KEY_COLUMNS))
        for table, key in MEASUREMENT_KEYS.items()
    },
}
"""Columns verify needs in each table's files."""


@dataclass(frozen=True)
class Problem:
    """One file that does not match the index: the file (relative to the root) and its trial."""

    trial_id: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path} (trial {self.trial_id}): {self.message}"


@dataclass(frozen=True)
class Duplicate:
    """A key of one trial's measurement ``table`` stored ``times`` times, in ``files``."""

    trial_id: str
    table: str
    key: tuple
    times: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class Verification:
    trials: int
    files: int
    """Files whose content was checked: spec.json and weights files."""
    problems: list[Problem]
    duplicates: list[Duplicate] = dataclasses.field(default_factory=list)
    damaged_epochs: dict[str, frozenset[int]] = dataclasses.field(default_factory=dict)
    """Per trial, the checkpoints whose weights file is missing or does not match index/weights."""
    checkpoints: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    """Per checked trial, its checkpoint epochs (from its trial row)."""


def verify_store(store: Store) -> Verification:
    """Check every complete trial of ``store`` (see the module docstring)."""
    if not store.exists(layout.index_dir("trials")):
        raise StoreError(f"{store.uri} is not a layerswap store (no index/trials)")
    index = {table: _index_files(store, table) for table in KEY_COLUMNS}
    problems: list[Problem] = [
        Problem(relpath.rsplit("/", 1)[-1].split(".", 1)[0][:40], relpath,
                "not named after a trial id (<16 lowercase hex>.parquet); readers would mix it in")
        for files_of in index.values() for relpath in files_of.get(None, [])
    ]
    trials: list[dict] = []
    for trial_id, (relpath,) in sorted((k, v) for k, v in index["trials"].items() if k is not None):
        rows, found = read_index_file(store, "trials", trial_id, relpath)
        problems += found
        if rows is not None and len(rows) != 1:
            problems.append(Problem(trial_id, relpath, f"holds {len(rows)} rows; a trial file holds one"))
        elif rows is not None:
            trials.append(rows[0])
    files = 0
    duplicates: list[Duplicate] = []
    damaged: dict[str, frozenset[int]] = {}
    checkpoints: dict[str, tuple[int, ...]] = {}
    for trial in trials:
        trial_id = trial["trial_id"]
        checkpoints[trial_id] = tuple(trial["checkpoints"] or ())
        problems += check_spec(store, trial_id, trial["spec_json"])
        if layout.index_path("swaps", trial_id) not in index["swaps"].get(trial_id, []):
            problems.append(Problem(trial_id, layout.index_path("swaps", trial_id), "missing"))
        for table in MEASUREMENT_KEYS:
            found, repeated = check_measurements(store, table, trial_id, index[table].get(trial_id, []))
            problems += found
            duplicates += repeated
        by_path: dict[str, list[dict]] = {}
        for relpath in index["weights"].get(trial_id, []):
            rows, found = read_index_file(store, "weights", trial_id, relpath)
            problems += found
            for row in rows or []:
                by_path.setdefault(row["path"], []).append(row)
        epochs = {row["epoch"] for rows in by_path.values() for row in rows}
        unindexed = sorted(set(stored_checkpoints(trial)) - epochs)
        problems += [
            Problem(trial_id, layout.weights_path(trial_id, epoch), "checkpoint has no rows in index/weights")
            for epoch in unindexed
        ]
        bad_epochs = set(unindexed)
        for relpath, rows in sorted(by_path.items()):
            found = check_weights_file(store, trial_id, relpath, rows)
            problems += found
            if found:
                bad_epochs.add(rows[0]["epoch"])
        if bad_epochs:
            damaged[trial_id] = frozenset(bad_epochs)
        files += 1 + len(by_path)
    return Verification(len(trials), files, problems, duplicates, damaged, checkpoints)


def stored_checkpoints(trial: dict) -> list[int]:
    """The checkpoint epochs a trial row says are stored: all of them, or for a network that
    diverged only those before the epoch it diverged in."""
    diverged = trial.get("diverged_epoch")
    return [epoch for epoch in trial["checkpoints"] or () if diverged is None or epoch < diverged]


def check_measurements(
    store: Store, table: str, trial_id: str, relpaths: list[str]
) -> tuple[list[Problem], list[Duplicate]]:
    """The problems of a trial's files of one measurement table, and each key stored more than once
    (a problem naming the files that hold it)."""
    problems: list[Problem] = []
    holders: dict[tuple, list[str]] = defaultdict(list)
    base = layout.index_path(table, trial_id)
    for relpath in sorted(relpaths, key=lambda path: (path != base, path)):  # the trial's own file first
        rows, found = read_index_file(store, table, trial_id, relpath)
        problems += found
        for row in rows or []:
            holders[measurement_key(table, row)].append(relpath)
    duplicates = [
        Duplicate(trial_id, table, key, len(files), tuple(dict.fromkeys(files)))
        for key, files in sorted(holders.items(), key=lambda item: str(item[0])) if len(files) > 1
    ]
    for duplicate in duplicates:
        where = " and ".join(duplicate.files) if len(duplicate.files) > 1 else f"{duplicate.files[0]} (twice)"
        problems.append(Problem(
            trial_id, duplicate.files[0],
            f"key {duplicate.key} is measured {duplicate.times} times, in {where}; --repair keeps one",
        ))
    return problems, duplicates


def measurement_key(table: str, row: dict) -> tuple:
    """The key of one row of a measurement table (a key column it lacks, or null, as
    :data:`LATER_KEY_COLUMNS` says; a swap row's as readers key it, ``recalibrate`` 0 where absent)."""
    if table == "swaps":
        return row_key(row)
    return tuple(
        LATER_KEY_COLUMNS[c] if row.get(c) is None and c in LATER_KEY_COLUMNS else row[c]
        for c in MEASUREMENT_KEYS[table]
    )


def _index_files(store: Store, table: str) -> dict[str | None, list[str]]:
    """The visible files of ``index/<table>`` by the trial id in their name (None: a name without one)."""
    files: dict[str | None, list[str]] = {}
    for relpath in store.list_files(layout.index_dir(table)):
        parsed = layout.parse_index_path(relpath)
        trial_id = parsed.trial_id if parsed is not None and parsed.named_after_a_trial else None
        files.setdefault(trial_id, []).append(relpath)
    return files


def read_index_file(
    store: Store, table: str, trial_id: str, relpath: str
) -> tuple[list[dict] | None, list[Problem]]:
    """The rows of one index file, cast to the table's schema, and what is wrong with it.

    Rows are None when the file cannot be read or lacks a column verify needs.
    Every row must carry ``trial_id`` (the one in the file name) and keys that
    can be trusted: weights rows point at this trial's own epoch files; swap
    rows have a known kind.
    """

    def problem(message: str) -> Problem:
        return Problem(trial_id, relpath, message)

    schema = TABLE_SCHEMAS[table]
    try:
        data = pq.read_table(store.path(relpath), filesystem=store.fs)
    except (pa.ArrowException, OSError) as err:
        return None, [problem(f"not a readable Parquet file ({str(err).splitlines()[0][:200]})")]
    problems = [
        problem(f"column {name!r} is missing")
        for name in KEY_COLUMNS[table] if name not in data.column_names
    ]
    columns = [field for field in schema if field.name in data.column_names]
    for field in columns:
        try:
            data.column(field.name).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            problems.append(
                problem(f"column {field.name!r} is {data.schema.field(field.name).type}, "
                        f"the {table} schema says {field.type}")
            )
    if problems:
        return None, problems
    rows = data.select([f.name for f in columns]).cast(pa.schema(columns)).to_pylist()
    ids = sorted({str(row["trial_id"]) for row in rows} - {trial_id})
    if ids:
        return None, [problem(f"holds rows of trial id {ids[0][:40]!r}, not only of {trial_id}")]
    if table == "weights":
        bad = [row for row in rows if row["epoch"] is None or row["epoch"] < 0
               or row["path"] != layout.weights_path(trial_id, row["epoch"])]
        if bad:
            return None, [problem(f"a row of tensor {str(bad[0]['tensor'])[:40]!r} points at "
                                  f"{str(bad[0]['path'])[:80]!r}, not at this trial's epoch file")]
    if table == "swaps":
        kinds = sorted({str(row["kind"]) for row in rows} - KINDS)
        if kinds:
            return None, [problem(f"swap kind {kinds[0][:40]!r} is not one of {', '.join(sorted(KINDS))}")]
    return rows, []


def check_spec(store: Store, trial_id: str, spec_json: str | None) -> list[Problem]:
    """``spec.json`` is present, hashes to ``trial_id`` and equals the trial row's copy."""
    relpath = layout.spec_path(trial_id)
    try:
        data = store.read_bytes(relpath)
    except StoreError:
        return [Problem(trial_id, relpath, "missing")]
    problems = []
    digest = hashlib.sha256(data).hexdigest()
    if digest[:16] != trial_id:
        problems.append(
            Problem(trial_id, relpath, f"its sha256 starts {digest[:16]}, not with the trial id (edited?)")
        )
    if spec_json is not None and data != spec_json.encode("utf-8"):
        problems.append(Problem(trial_id, relpath, "differs from the spec_json of the trial's row"))
    return problems


def check_weights_file(store: Store, trial_id: str, relpath: str, rows: list[dict]) -> list[Problem]:
    """The file at ``relpath`` holds exactly the tensors its index ``rows`` describe (each difference
    a problem: :func:`trainables.measure.checked_weights.differences`, what every reader checks)."""

    def problem(message: str) -> Problem:
        return Problem(trial_id, relpath, message)

    named = sorted({layout.weights_path(trial_id, row["epoch"]) for row in rows})
    if named != [relpath]:
        return [problem(f"index/weights rows of epoch files {', '.join(named)} point at this path")]
    try:
        tensors = safetensors.torch.load(store.read_bytes(relpath))
    except StoreError:
        return [problem(f"missing (index/weights lists {len(rows)} tensors in it)")]
    except SafetensorError as err:
        return [problem(f"not a readable safetensors file ({err})")]
    return [problem(message) for message in differences(tensors, rows)]
