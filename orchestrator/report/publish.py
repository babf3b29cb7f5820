"""Where a report is written, what it was built from, and whether it is still current.

``STORE/report/`` always covers every sweep in the store. Its ``report.json``
records the *index state* it was built from: a digest of the name and size of
every visible file under ``index/`` and ``sweeps/`` (the only inputs of a
report), so the report is current exactly when that digest still matches.

A rebuild never leaves half a report or a figure it no longer draws:

- on a local store the new report is written to a fresh folder
  ``STORE/_report.<random>.tmp`` and swapped in by two renames (the old
  folder renamed aside, then deleted), so a reader sees the old report, the
  new one, or for an instant none;
- on an object store (S3, GCS), which has no folders to rename, every file is
  one atomic PUT: figures and tables first, then ``report.md`` and
  ``report.html``, ``report.json`` last, then every other file under
  ``report/`` is deleted. A reader of ``report.html`` (self-contained) always
  sees a whole report.

A report written elsewhere (``--out DIR``) is written file by file the same
way, and removes only the files its predecessor's ``report.json`` listed, so
nothing else in ``DIR`` is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow.fs as pafs

from trainables.store import Store, StoreError, layout

RECORD_NAME = "report.json"
DIGESTED_DIRS = (layout.INDEX_DIR, layout.SWEEPS_DIR)
LAST_WRITTEN = ("report.md", "report.html", RECORD_NAME)
"""Written after every figure and table, in this order: what they link to exists before them."""
SWAP_ATTEMPTS = 3


@dataclass(frozen=True)
class IndexState:
    """``digest``: sha256 (hex) of the sorted (path, size) of the visible index and sweep-record
    files; ``files``: how many there are."""

    digest: str
    files: int


def index_state(store: Store) -> IndexState:
    """The index state of ``store``: one listing per folder (no file is opened)."""
    prefix = f"{store.root}/" if store.root else ""
    entries = []
    for folder in DIGESTED_DIRS:
        selector = pafs.FileSelector(store.path(folder), allow_not_found=True, recursive=True)
        for info in store.fs.get_file_info(selector):
            # the files Store.list_files shows: temporary and hidden names are no part of the index
            if info.type == pafs.FileType.File and not layout.is_hidden(info.base_name):
                entries.append(f"{info.path[len(prefix):]}\t{info.size}")
    text = "\n".join(sorted(entries)).encode("utf-8")
    return IndexState(hashlib.sha256(text).hexdigest(), len(entries))


def read_record(folder: Store) -> dict | None:
    """The ``report.json`` of a report folder, or None where there is none (or it is unreadable)."""
    try:
        record = json.loads(folder.read_bytes(RECORD_NAME))
    except (StoreError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def store_report(store: Store) -> Store:
    """The store's own report folder, ``STORE/report``."""
    return store.child(layout.REPORT_DIR)


def is_current(store: Store) -> bool:
    """Whether ``STORE/report`` covers the whole store as its index is now."""
    record = read_record(store_report(store))
    return (
        record is not None
        and record.get("sweep") is None
        and record.get("index_digest") == index_state(store).digest
    )


def _ordered(files: dict[str, bytes]) -> list[str]:
    return sorted(files, key=lambda name: (LAST_WRITTEN.index(name) if name in LAST_WRITTEN else -1, name))


def _write_in_order(folder: Store, files: dict[str, bytes]) -> None:
    for name in _ordered(files):
        folder.write_bytes(name, files[name])


def _delete(folder: Store, names: set[str]) -> None:
    for name in sorted(names):
        try:
            folder.fs.delete_file(folder.path(name))
        except FileNotFoundError:
            pass


def publish_store_report(store: Store, files: dict[str, bytes]) -> list[str]:
    """Replace ``STORE/report`` by exactly ``files`` (name -> bytes); the paths written."""
    target = store_report(store)
    if not store.is_local:
        _write_in_order(target, files)
        _delete(target, set(target.list_files("")) - set(files))
        return [target.path(name) for name in files]
    staging = store.child(layout.temporary_name(layout.REPORT_DIR))
    try:
        _write_in_order(staging, files)
        _swap_in(store, staging, target)
    except BaseException:
        if store.fs.get_file_info(staging.root).type != pafs.FileType.NotFound:
            store.fs.delete_dir(staging.root)
        raise
    return [target.path(name) for name in files]


def _swap_in(store: Store, staging: Store, target: Store) -> None:
    """Rename ``staging`` to ``target``, renaming what is there aside first and deleting it after
    (another writer's report swapped in meanwhile is set aside the same way)."""
    def present(path: str) -> bool:
        return store.fs.get_file_info(path).type != pafs.FileType.NotFound

    for attempt in range(SWAP_ATTEMPTS):
        aside = None
        if present(target.root):
            aside = store.child(layout.temporary_name(f"{layout.REPORT_DIR}-old")).root
            store.fs.move(target.root, aside)
        try:
            store.fs.move(staging.root, target.root)
        except OSError:
            if aside is not None and not present(target.root):
                store.fs.move(aside, target.root)  # the old report back where it was
                aside = None
            if attempt == SWAP_ATTEMPTS - 1:
                raise
            continue
        finally:
            if aside is not None:
                store.fs.delete_dir(aside)
        return


def publish_copy(folder: Store, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` into a folder of the user's (``--out``), then delete the files that the
    report written there before listed and this one does not; the paths written."""
    previous = read_record(folder)
    _write_in_order(folder, files)
    listed = previous.get("files") if previous else None
    if isinstance(listed, list):
        _delete(folder, {name for name in listed if isinstance(name, str) and "/" not in name} - set(files))
    return [folder.path(name) for name in files]
