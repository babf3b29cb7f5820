"""``layerswap verify``: check every complete trial's files against the index.

For each trial with a trial row: ``spec.json`` exists, its sha256 starts with
the trial id and it equals the row's ``spec_json``; the trial has swaps and
weights index files; every checkpoint epoch of the trial has weights rows; and
every weights file exists and holds exactly the tensors its ``index/weights``
rows describe (name, shape, dtype, byte count, sha256 of the raw bytes); and
no swap key (kind, layer, epoch, alpha, draw) of the trial is stored twice.
Trials without a trial row are unfinished and not checked.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import safetensors.torch
from safetensors import SafetensorError

from orchestrator.listing import SWAP_KEY_COLUMNS
from trainables.store import Store, StoreError, index_relpath, spec_relpath, weights_relpath
from trainables.trial import tensor_sha256


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
    if not store.exists("index/trials"):
        raise StoreError(f"{store.uri} is not a layerswap store (no index/trials)")
    trials = store.read_index("trials").select(["trial_id", "spec_json", "checkpoints"]).to_pylist()
    weights: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in store.read_index("weights").to_pylist():
        weights[row["trial_id"]][row["path"]].append(row)
    swap_files = set(store.list_files("index/swaps"))
    duplicates = duplicate_swap_keys(store)
    problems: list[Problem] = []
    files = 0
    for trial in sorted(trials, key=lambda t: t["trial_id"]):
        trial_id, by_path = trial["trial_id"], weights.get(trial["trial_id"], {})
        problems += check_spec(store, trial_id, trial["spec_json"])
        if index_relpath("swaps", trial_id) not in swap_files:
            problems.append(Problem(trial_id, index_relpath("swaps", trial_id), "missing"))
        epochs = {row["epoch"] for rows in by_path.values() for row in rows}
        problems += [
            Problem(trial_id, weights_relpath(trial_id, epoch), "checkpoint has no rows in index/weights")
            for epoch in sorted(set(trial["checkpoints"] or ()) - epochs)
        ]
        for relpath, rows in sorted(by_path.items()):
            problems += check_weights_file(store, trial_id, relpath, rows)
        problems += [
            Problem(trial_id, index_relpath("swaps", trial_id), f"key {key} is measured {count} times")
            for key, count in sorted(duplicates.get(trial_id, {}).items(), key=str)
        ]
        files += 1 + len(by_path)
    return Verification(len(trials), files, problems)


def duplicate_swap_keys(store: Store) -> dict[str, dict[tuple, int]]:
    """Per trial, the swap keys (kind, layer, epoch, alpha, draw) stored more than once.

    Two writers measuring the same key at once can leave two rows; readers keep one.
    """
    counts = Counter(
        (row["trial_id"], row["kind"], row["layer"], row["epoch"], row["alpha"], row["draw"])
        for row in store.read_index("swaps").select(SWAP_KEY_COLUMNS).to_pylist()
    )
    found: dict[str, dict[tuple, int]] = defaultdict(dict)
    for (trial_id, *key), count in counts.items():
        if count > 1:
            found[trial_id][tuple(key)] = count
    return found


def check_spec(store: Store, trial_id: str, spec_json: str | None) -> list[Problem]:
    """``spec.json`` is present, hashes to ``trial_id`` and equals the trial row's copy."""
    relpath = spec_relpath(trial_id)
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

    named = sorted({weights_relpath(trial_id, row["epoch"]) for row in rows})
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
