"""The Parquet-indexed store: one root on any filesystem pyarrow.fs opens.

Where each file lives is :mod:`trainables.store.layout`'s to say.

Every write goes to a temporary name that starts with ``_`` and ends in
``.tmp`` and is then renamed (on object stores, where a single upload only
appears once complete, it is written in place), so readers never see half a
file, and neither ``pyarrow.dataset`` discovery nor a glob such as
``index/trials/*.parquet`` sees the leftovers of a crashed writer.

A store's ``uri`` has its credentials redacted (:func:`trainables.store.uri.redact_secrets`):
it is what gets printed and persisted. ``location`` keeps them, for opening
the store in workers.
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.errors import StoreError, StoreUnwritable
from trainables.store import layout
from trainables.store.criticality_rows import complete_legacy_rows
from trainables.store.schemas import TABLE_SCHEMAS
from trainables.store.uri import redact_secrets

if TYPE_CHECKING:
    import pyarrow.dataset as ds

# Filesystems whose output stream only becomes visible, whole, when closed.
_ATOMIC_ON_CLOSE = frozenset({"s3", "gcs"})
REACH_TIMEOUT_S = 30.0
"""How long opening a remote store may take before it counts as unreachable."""
T = TypeVar("T")

PARQUET_WRITE_OPTIONS: dict = {
    "version": "2.6",
    "compression": "snappy",
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "data_page_size": 1024 * 1024,
    "row_group_size": 1024 * 1024,
    "use_compliant_nested_type": True,
    "store_schema": True,
    "write_page_index": False,
    "write_page_checksum": False,
}
"""Every Parquet file is written with these settings (pyarrow's defaults, pinned), so the same
rows give the same bytes whatever a later pyarrow chooses by default."""


STORE_VERSION = 2
"""Version 2: a network's id is the hash of its training spec only (DESIGN.md, "Identity")."""

_REFUSED_FOR_GOOD = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded (no space left for this user)",
    errno.EROFS: "read-only file system",
}
"""Write errors that no retry can mend, and how the one line names them."""


def write_refusal(err: OSError, path: str) -> StoreUnwritable | None:
    """The one-line StoreUnwritable for a write to ``path`` refused with no space left or a
    read-only filesystem; None for any other error."""
    cause = _REFUSED_FOR_GOOD.get(err.errno or 0)
    if cause is None:
        return None
    return StoreUnwritable(
        f"store: cannot write {redact_secrets(path)}: {cause}; free space there (or make it writable) "
        "or choose another location, then run the same command again"
    )


@dataclass(frozen=True)
class Store:
    """A store root: ``uri`` as the user gave it (credentials redacted), ``fs`` and ``root`` inside it.

    ``location`` is the URI with its credentials, made independent of the
    working directory (local paths absolute): what to hand to workers, whose
    working directory differs. Never print or persist it.
    """

    uri: str
    location: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, uri: str) -> Store:
        """Open (without writing anything) the store at a local path or URI.

        A remote store that does not answer within :data:`REACH_TIMEOUT_S`
        is refused (StoreError), as is an object-store URI without a bucket.
        """
        uri = os.fspath(uri) if isinstance(uri, os.PathLike) else uri
        if not isinstance(uri, str) or not uri.strip() or "\0" in uri:
            raise StoreError(f"store: {str(uri)[:60]!r} is not a store location (a path or URI)")
        shown = redact_secrets(uri)
        location = uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))
        try:
            fs, root = _bounded(lambda: pafs.FileSystem.from_uri(location), shown)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as err:
            raise StoreError(
                f"store: pyarrow cannot open {shown!r} ({redact_secrets(str(err))}); use a local path "
                "or a URI such as s3://bucket/prefix"
            ) from None
        root = root.rstrip("/")
        bucket = root.split("/", 1)[0]
        if fs.type_name in _ATOMIC_ON_CLOSE and not bucket:
            raise StoreError(
                f"store: {shown!r} names no bucket; use {fs.type_name.replace('gcs', 'gs')}://bucket/prefix"
            )
        try:
            info = _bounded(lambda: fs.get_file_info(root), shown) if root else None
            if (
                fs.type_name in _ATOMIC_ON_CLOSE
                and _bounded(lambda: fs.get_file_info(bucket), shown).type == pafs.FileType.NotFound
            ):
                raise StoreError(
                    f"store: bucket {bucket!r} of {shown!r} does not exist; create it first "
                    f"(e.g. aws s3 mb s3://{bucket})"
                )
        except OSError as err:
            raise StoreError(
                f"store: cannot reach {shown!r} ({redact_secrets(str(err)).splitlines()[0]}); check the "
                "network and credentials, and for an S3-compatible server the endpoint_override, "
                "scheme and region options of the URI"
            ) from None
        if info is not None and info.type == pafs.FileType.File:
            raise StoreError(f"store: {shown!r} is a file, not a store directory")
        return cls(uri=shown, location=location, fs=fs, root=root)

    def check_writable(self) -> None:
        """Write and delete ``_probe-<random>.tmp`` at the root; StoreError (one line) when that fails.

        Directories it had to create for the probe are removed again, so a
        store that is refused later is left as it was.
        """
        created = self._missing_local_dirs()
        probe = self.path(layout.probe_name())
        try:
            if self.root and self.fs.type_name not in _ATOMIC_ON_CLOSE:
                self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"layerswap write probe\n")
            self.fs.delete_file(probe)
        except OSError as err:
            refused = write_refusal(err, self.uri)
            if refused is not None:
                raise refused from None
            raise StoreError(
                f"store: cannot write to {self.uri!r} ({redact_secrets(str(err)).splitlines()[0]}); "
                "check its permissions (and for an object store the credentials), or choose another --store"
            ) from None
        finally:
            self._delete_quietly(probe)  # also when its write failed half way (a full disk)
            for directory in created:
                try:
                    self.fs.delete_dir(directory)
                except OSError:
                    break  # not empty: something else was written meanwhile

    def _delete_quietly(self, path: str) -> None:
        """Delete the file at ``path`` (absolute in ``fs``) if it is there; no error if that fails."""
        try:
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                self.fs.delete_file(path)
        except OSError:
            pass

    def _missing_local_dirs(self) -> list[str]:
        """The root and its ancestors that do not exist yet, deepest first (local stores only)."""
        missing: list[str] = []
        if not self.is_local or not self.root:
            return missing
        path = self.root
        while path and self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        return missing

    def version(self) -> int | None:
        """The store version: from ``layerswap.json``; 1 for a store written before it
        existed (it has contents but no marker); None for a location that holds no store yet."""
        if self.exists(layout.STORE_MARKER):
            try:
                return int(json.loads(self.read_bytes(layout.STORE_MARKER))["store_version"])
            except (ValueError, KeyError, TypeError) as err:
                marker = self.path(layout.STORE_MARKER)
                raise StoreError(f"store: {marker} is not a store marker ({err})") from None
        if any(self.exists(name) for name in layout.CONTENT_DIRS):
            return 1
        foreign = self._visible_entries()
        if foreign:
            raise StoreError(
                f"store: {self.uri!r} is a directory that is not empty ({', '.join(foreign)}) and holds no "
                f"layerswap store (no {layout.STORE_MARKER}); a new store needs an empty or new directory"
            )
        return None

    def _visible_entries(self, limit: int = 3) -> list[str]:
        """Up to ``limit`` names (sorted) of the root's entries that are not hidden (``_``/``.``)."""
        if not self.root and self.fs.type_name in _ATOMIC_ON_CLOSE:
            return []
        selector = pafs.FileSelector(self.root or "/", allow_not_found=True, recursive=False)
        try:
            infos = self.fs.get_file_info(selector)
        except FileNotFoundError:  # gone while listed: another driver's probe made the root and removed it
            return []
        names = sorted(info.base_name for info in infos if not layout.is_hidden(info.base_name))
        return names[:limit] + (["…"] if len(names) > limit else [])

    def require_writable_version(self, command: str) -> None:
        """Before ``command`` (sweep, analyze) writes: create the marker of a new store,
        refuse a store of another version (its ids mean something else)."""
        version = self.version()
        if version is None:
            marker = json.dumps({"store_version": STORE_VERSION}).encode("utf-8")
            self.write_bytes(layout.STORE_MARKER, marker)
        elif version == 1:
            raise StoreError(
                f"store: {self.uri} is a version-1 store (its trial ids include the swap plan); "
                f"{command} writes version-{STORE_VERSION} stores only: use a new store path "
                "(ls, report and verify still read this one)"
            )
        elif version != STORE_VERSION:
            raise StoreError(
                f"store: {self.uri} is a version-{version} store; this layerswap writes version "
                f"{STORE_VERSION}: upgrade layerswap"
            )

    def child(self, relpath: str) -> Store:
        """The folder ``relpath`` of this store, as a store of its own (e.g. ``report``)."""

        def joined(uri: str) -> str:  # keeps a URI's ?options at the end
            base, mark, query = uri.partition("?")
            return f"{base.rstrip('/')}/{relpath}{mark}{query}"

        return Store(joined(self.uri), joined(self.location), self.fs, self.path(relpath))

    @property
    def is_local(self) -> bool:
        return self.fs.type_name == "local"

    def path(self, relpath: str) -> str:
        return f"{self.root}/{relpath}" if self.root else relpath

    def exists(self, relpath: str) -> bool:
        return self.fs.get_file_info(self.path(relpath)).type != pafs.FileType.NotFound

    def read_bytes(self, relpath: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(relpath)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise StoreError(f"store: {self.path(relpath)} is missing") from None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write ``data`` so that ``relpath`` appears whole or not at all."""
        final = self.path(relpath)
        try:
            self._write_whole(final, data)
        except OSError as err:
            refused = write_refusal(err, final)
            if refused is not None:
                raise refused from None
            raise

    def _write_whole(self, final: str, data: bytes) -> None:
        directory, name = final.rsplit("/", 1)
        self.fs.create_dir(directory, recursive=True)
        if self.fs.type_name in _ATOMIC_ON_CLOSE:
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        temporary = f"{directory}/{layout.temporary_name(name)}"
        try:
            with self.fs.open_output_stream(temporary) as out:
                out.write(data)
            self.fs.move(temporary, final)
        except BaseException:
            self._delete_quietly(temporary)
            raise

    def delete(self, relpath: str) -> None:
        """Delete the file ``relpath`` (only ``verify --repair`` and released claims delete)."""
        try:
            self.fs.delete_file(self.path(relpath))
        except FileNotFoundError:
            pass
        except OSError as err:
            refused = write_refusal(err, self.path(relpath))
            if refused is not None:
                raise refused from None
            raise

    def write_index(self, table: str, trial_id: str, rows: pa.Table) -> None:
        """Write one trial's rows of an index table, cast to the canonical schema."""
        self.write_table(layout.index_path(table, trial_id), table, rows)

    def write_table(self, relpath: str, table: str, rows: pa.Table) -> None:
        """Write ``rows`` of index ``table`` (its columns in the canonical order, cast to the
        canonical schema) as ``relpath``."""
        schema = TABLE_SCHEMAS[table]
        buffer = io.BytesIO()
        pq.write_table(rows.select(schema.names).cast(schema), buffer, **PARQUET_WRITE_OPTIONS)
        self.write_bytes(relpath, buffer.getvalue())

    def list_files(self, reldir: str) -> list[str]:
        """Paths (relative to the root) of the visible files under ``reldir``."""
        selector = pafs.FileSelector(self.path(reldir), allow_not_found=True, recursive=True)
        prefix = f"{self.root}/" if self.root else ""
        return sorted(
            info.path[len(prefix):]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and not layout.is_hidden(info.base_name)
        )

    def read_index(self, table: str, filter: ds.Expression | None = None) -> pa.Table:
        """Read a whole index table (empty if none written yet) with its canonical schema
        (criticality rows written before its search columns completed: :mod:`criticality_rows`)."""
        schema = TABLE_SCHEMAS[table]
        files = [self.path(p) for p in self.list_files(layout.index_dir(table))]
        if not files:
            return schema.empty_table()
        import pyarrow.dataset as ds  # imports pandas (0.3 s): only once an index is read

        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs)
        try:
            rows = dataset.to_table(filter=filter)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise StoreError(self._schema_problem(table, files) or f"store: {table} index: {err}") from None
        return complete_legacy_rows(rows) if table == "criticality" else rows

    def _schema_problem(self, table: str, files: list[str]) -> str | None:
        expected = TABLE_SCHEMAS[table]
        for path in files:
            try:
                found = pq.read_schema(path, filesystem=self.fs)
            except (pa.ArrowInvalid, OSError) as err:
                return f"store: {path} is not a readable Parquet file ({err})"
            for field in expected:
                if field.name in found.names and not _castable(found.field(field.name).type, field.type):
                    return (
                        f"store: {path}: column {field.name!r} is {found.field(field.name).type}, "
                        f"the {table} schema says {field.type}"
                    )
        return None

    def completed_trial_ids(self) -> set[str]:
        """Trial ids whose trial row exists: those trials are finished."""
        return self.index_trial_ids("trials")

    def index_files(self, table: str) -> list[layout.IndexFile]:
        """The visible files of ``index/<table>``, their names parsed (:func:`layout.parse_index_path`)."""
        relpaths = self.list_files(layout.index_dir(table))
        return [parsed for relpath in relpaths if (parsed := layout.parse_index_path(relpath)) is not None]

    def index_trial_ids(self, table: str) -> set[str]:
        """The trial ids that the files of ``index/<table>`` are named after (one trial may
        have several files: its own and batches measured later)."""
        return {index_file.trial_id for index_file in self.index_files(table)}

def _bounded(action: Callable[[], T], shown: str) -> T:
    """``action()`` within REACH_TIMEOUT_S, in a helper thread (pyarrow's remote calls retry for minutes)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, action()))
        except BaseException as err:  # re-raised in the caller's thread
            outcome.append((False, err))

    thread = threading.Thread(target=run, name="layerswap-store-open", daemon=True)
    thread.start()
    thread.join(REACH_TIMEOUT_S)
    if not outcome:
        raise StoreError(
            f"store: {shown!r} did not answer within {REACH_TIMEOUT_S:g} s; check the network, the "
            "credentials and the URI's endpoint options"
        )
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _castable(found: pa.DataType, expected: pa.DataType) -> bool:
    if found == expected:
        return True
    try:
        pa.array([], type=found).cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True
