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
movement row (epoch, layer) or a criticality row (layer and its settings);
readers keep the first, so a duplicate is a sign of two writers. Trial ids
are checked to be 16 lowercase hex characters before any becomes a path, so
a crafted row cannot make verify read outside the store.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
from safetensors import SafetensorError

from trainables.plan import SWAP_KINDS, row_key
from trainables.store import Store, StoreError, layout
from trainables.store.schemas import TABLE_SCHEMAS
from trainables.worker.pack_job import tensor_sha256

KINDS = frozenset({"none", "interpolate", *SWAP_KINDS})
SWAP_KEY = ("kind", "layer", "epoch", "alpha", "draw")
"""The key columns every swaps file has (``recalibrate``, absent before v3, reads as 0)."""
MEASUREMENT_KEYS = {
    "swaps": SWAP_KEY,
    "layers": ("epoch", "layer"),
    "criticality": ("layer", "n_alpha", "n_sigma", "sigma_max", "noise_samples", "rtol", "subset_size"),
}
"""Per measurement table, the columns that key one row of a trial."""
KEY_COLUMNS = {
    "trials": ("trial_id", "spec_json", "checkpoints"),
    "weights": ("trial_id", "epoch", "tensor", "path"),
    **{table: ("trial_id", *key) for table, key in MEASUREMENT_KEYS.items()},
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
class Verification:
    trials: int
    files: int
    """Files whose content was checked: spec.json and weights files."""
    problems: list[Problem]


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
    for trial in trials:
        trial_id = trial["trial_id"]
        problems += check_spec(store, trial_id, trial["spec_json"])
        if layout.index_path("swaps", trial_id) not in index["swaps"].get(trial_id, []):
            problems.append(Problem(trial_id, layout.index_path("swaps", trial_id), "missing"))
        for table in MEASUREMENT_KEYS:
            problems += check_measurements(store, table, trial_id, index[table].get(trial_id, []))
        by_path: dict[str, list[dict]] = {}
        for relpath in index["weights"].get(trial_id, []):
            rows, found = read_index_file(store, "weights", trial_id, relpath)
            problems += found
            for row in rows or []:
                by_path.setdefault(row["path"], []).append(row)
        epochs = {row["epoch"] for rows in by_path.values() for row in rows}
        problems += [
            Problem(trial_id, layout.weights_path(trial_id, epoch), "checkpoint has no rows in index/weights")
            for epoch in sorted(set(trial["checkpoints"] or ()) - epochs)
        ]
        for relpath, rows in sorted(by_path.items()):
            problems += check_weights_file(store, trial_id, relpath, rows)
        files += 1 + len(by_path)
    return Verification(len(trials), files, problems)


def check_measurements(store: Store, table: str, trial_id: str, relpaths: list[str]) -> list[Problem]:
    """The problems of a trial's files of one measurement table, and each key stored more than once."""
    problems: list[Problem] = []
    keys: Counter = Counter()
    for relpath in relpaths:
        rows, found = read_index_file(store, table, trial_id, relpath)
        problems += found
        keys.update(
            row_key(row) if table == "swaps" else tuple(row[c] for c in MEASUREMENT_KEYS[table])
            for row in rows or []
        )
    return problems + [
        Problem(trial_id, layout.index_path(table, trial_id), f"key {key} is measured {n} times")
        for key, n in sorted(keys.items(), key=str) if n > 1
    ]


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
    """The file at ``relpath`` holds exactly the tensors its index ``rows`` describe."""

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
    problems = []
    for row in rows:
        name = row["tensor"]
        tensor = tensors.get(name)
        if tensor is None:
            problems.append(problem(f"tensor {name!r} is in index/weights but not in the file"))
            continue
        found = {
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "nbytes": tensor.numel() * tensor.element_size(),
            "sha256": tensor_sha256(tensor),
        }
        for column, value in found.items():
            if value != row[column]:
                said = row[column]
                if column == "sha256":
                    value, said = f"{value[:12]}…", f"{said[:12]}…"
                problems.append(problem(f"tensor {name!r}: {column} is {value}, index/weights says {said}"))
    problems += [
        problem(f"tensor {name!r} is in the file but not in index/weights")
        for name in sorted(set(tensors) - {row["tensor"] for row in rows})
    ]
    return problems
