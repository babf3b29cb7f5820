"""``layerswap verify --repair``: the one sanctioned rewrite of index files.

It mends two things :mod:`orchestrator.catalog.verify` finds, per trial and measurement table:

- a key stored more than once (two writers measured it at once): the trial's batch files are
  collapsed into one new batch file holding each key once (the first row read, in file-name
  order; keys the trial's own file already holds are left there);
- rows measured later (batch files) from a checkpoint whose weights file no longer matches
  ``index/weights``: they are dropped the same way, so ``layerswap analyze`` measures those keys
  again once the file is restored (until then it refuses that network with one line). Rows in the
  trial's own file were measured at training from the weights in memory, whose hashes the index
  holds, and are kept.

Order, so that a crash at any point loses nothing: the new file is written (atomically, like
every store file) before the files it replaces are deleted; a crash in between leaves keys stored
twice, which readers read once and a second ``--repair`` mends. A trial's own file with a key
twice in it is rewritten in place (atomically). Nothing else is ever rewritten.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from orchestrator.catalog.verify import Verification
from trainables.measure.row_keys import (
    batch_relpath,
    criticality_batch_relpath,
    criticality_row_key,
    movement_batch_relpath,
)
from trainables.plan import row_key
from trainables.store import Store, layout
from trainables.store.schemas import TABLE_SCHEMAS

KEYS: dict[str, Callable[[dict], tuple]] = {
    "swaps": row_key,
    "criticality": criticality_row_key,
    "layers": lambda row: (row["epoch"], row["layer"]),
}
"""Per measurement table, the key of one of a trial's rows (as readers and writers key them)."""


@dataclass(frozen=True)
class Mended:
    """What repairing one trial's files of one table did."""

    trial_id: str
    table: str
    written: str | None
    """The file written (None: every later row was dropped, nothing left to write)."""
    removed: tuple[str, ...]
    rows: int
    duplicates: int
    from_damaged: int

    def __str__(self) -> str:
        dropped = f"{self.duplicates} duplicate row(s) and {self.from_damaged} row(s) measured from " \
                  "damaged weights dropped"
        kept = f"{self.rows} rows kept in {self.written}" if self.written else "no rows left"
        removed = f"; removed {', '.join(self.removed)}" if self.removed else ""
        return f"repaired index/{self.table} of trial {self.trial_id}: {dropped}; {kept}{removed}"


def needs_of_key(table: str, key: tuple, checkpoints: tuple[int, ...]) -> set[int]:
    """The checkpoints a row's measurement was computed from: epoch 0 and the last (every swap and
    criticality search starts from them) and a swap's own epoch."""
    if table == "layers":  # movement is measured at every checkpoint
        return set(checkpoints) | {0}
    needs = {0, checkpoints[-1]} if checkpoints else {0}
    if table == "swaps" and key[2] is not None:
        needs.add(key[2])
    return needs


def repair_store(store: Store, verification: Verification) -> list[str]:
    """Mend the duplicates and the rows measured from damaged weights that ``verification`` found;
    one line per trial and table it mended (or could not: a file that is not readable Parquet)."""
    groups: set[tuple[str, str]] = {(d.trial_id, d.table) for d in verification.duplicates}
    for trial_id in verification.damaged_epochs:
        groups |= {(trial_id, table) for table in layout.BATCH_TABLES}
    files: dict[tuple[str, str], list[str]] = defaultdict(list)
    for table in {table for _, table in groups}:
        for index_file in store.index_files(table):
            if (index_file.trial_id, table) in groups and index_file.named_after_a_trial:
                files[(index_file.trial_id, table)].append(index_file.relpath)
    lines = []
    for trial_id, table in sorted(groups):
        try:
            done = mend(store, trial_id, table, sorted(files[(trial_id, table)]),
                        verification.damaged_epochs.get(trial_id, frozenset()),
                        verification.checkpoints.get(trial_id, ()))
        except (pa.ArrowException, OSError) as err:
            lines.append(f"not repaired: index/{table} of trial {trial_id}: a file is not readable "
                         f"({str(err).splitlines()[0][:120]}); restore or delete it by hand")
            continue
        if done is not None:
            lines.append(str(done))
    return lines


def mend(
    store: Store, trial_id: str, table: str, relpaths: list[str], damaged: frozenset[int],
    checkpoints: tuple[int, ...],
) -> Mended | None:
    """Rewrite one trial's files of ``table`` (its own file first, then its batches) so that each key
    is stored once and no later row comes from a ``damaged`` checkpoint; None when nothing changes."""
    base = layout.index_path(table, trial_id)
    key_of = KEYS[table]
    seen: set[tuple] = set()
    kept_base: list[int] = []
    kept_batches: list[pa.Table] = []
    duplicates = from_damaged = 0
    batches = [relpath for relpath in relpaths if relpath != base]
    base_rows = read_rows(store, table, base) if base in relpaths else None
    if base_rows is not None:
        for index, row in enumerate(base_rows.to_pylist()):
            key = key_of(row)
            if key in seen:
                duplicates += 1
            else:
                seen.add(key)
                kept_base.append(index)
    for relpath in batches:
        rows = read_rows(store, table, relpath)
        keep = []
        for index, row in enumerate(rows.to_pylist()):
            key = key_of(row)
            if key in seen:
                duplicates += 1
            elif needs_of_key(table, key, checkpoints) & damaged:
                from_damaged += 1
            else:
                seen.add(key)
                keep.append(index)
        kept_batches.append(rows.take(pa.array(keep, pa.int64())))
    if duplicates == 0 and from_damaged == 0:
        return None
    if base_rows is not None and len(kept_base) < base_rows.num_rows:
        store.write_table(base, table, base_rows.take(pa.array(kept_base, pa.int64())))
    written = None
    later = pa.concat_tables(kept_batches) if kept_batches else None
    if later is not None and later.num_rows:
        written = new_batch_path(table, trial_id, [key_of(row) for row in later.to_pylist()])
        store.write_table(written, table, later)
    removed = tuple(relpath for relpath in batches if relpath != written)
    for relpath in removed:
        store.delete(relpath)
    rows = later.num_rows if written is not None and later is not None else len(kept_base)
    if written is None and base_rows is not None and len(kept_base) < base_rows.num_rows:
        written = base
    return Mended(trial_id, table, written, removed, rows, duplicates, from_damaged)


def new_batch_path(table: str, trial_id: str, keys: list[tuple]) -> str:
    """Where the collapsed batch goes: named by the hash of its keys, as a writer would name it."""
    if table == "swaps":
        return batch_relpath(trial_id, keys)
    if table == "layers":
        return movement_batch_relpath(trial_id, [layer for _, layer in keys])
    return criticality_batch_relpath(trial_id, keys)


def read_rows(store: Store, table: str, relpath: str) -> pa.Table:
    """One index file's rows with the table's canonical schema (columns it lacks are null)."""
    schema = TABLE_SCHEMAS[table]
    return ds.dataset([store.path(relpath)], schema=schema, format="parquet", filesystem=store.fs).to_table()
