"""The Parquet-indexed store: one root on any filesystem pyarrow.fs opens.

Layout (DESIGN.md, "The store")::

    <root>/trials/<trial_id>/spec.json
    <root>/trials/<trial_id>/weights/epoch=<EEEE>.safetensors
    <root>/index/{trials,weights,swaps}/<trial_id>.parquet
    <root>/index/swaps/<trial_id>-<batch>.parquet  (rows measured later)
    <root>/sweeps/<sweep>/<config_hash>.json      (extension: the sweep's grid)
    <root>/layerswap.json                         {"store_version": 2}
    <root>/wandb/<sweep>/<trial_id>/offline-run-*/  (extension: offline W&B runs of other nodes)
    <root>/tune/

Every write goes to a temporary name starting with ``_`` and is then renamed
(on object stores, where a single upload only appears once complete, it is
written in place), so readers never see half a file and ``pyarrow.dataset``
discovery skips the leftovers of a crashed writer.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.schemas import TABLE_SCHEMAS

# Filesystems whose output stream only becomes visible, whole, when closed.
_ATOMIC_ON_CLOSE = frozenset({"s3", "gcs"})


STORE_VERSION = 2
"""Version 2: a network's id is the hash of its training spec only (DESIGN.md, "Identity")."""
VERSION_RELPATH = "layerswap.json"
_CONTENT_DIRS = ("index", "trials", "sweeps")


class StoreError(Exception):
    """A store that cannot be opened, read or trusted; the message says which."""


def weights_relpath(trial_id: str, epoch: int) -> str:
    return f"trials/{trial_id}/weights/epoch={epoch:04d}.safetensors"


def spec_relpath(trial_id: str) -> str:
    return f"trials/{trial_id}/spec.json"


def index_relpath(table: str, trial_id: str) -> str:
    return f"index/{table}/{trial_id}.parquet"


@dataclass(frozen=True)
class Store:
    """A store root: ``uri`` as the user gave it, ``fs`` and ``root`` inside it.

    ``location`` is ``uri`` made independent of the working directory (local
    paths absolute): what to hand to workers, whose working directory differs.
    """

    uri: str
    location: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def open(cls, uri: str) -> Store:
        """Open (without writing anything) the store at a local path or URI."""
        if not uri or not str(uri).strip():
            raise StoreError("store: an empty path is not a store location")
        location = str(uri) if "://" in str(uri) else os.path.abspath(os.path.expanduser(uri))
        try:
            fs, root = pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as err:
            raise StoreError(
                f"store: pyarrow cannot open {uri!r} ({err}); use a local path or a URI "
                "such as s3://bucket/prefix"
            ) from None
        root = root.rstrip("/")
        try:
            info = fs.get_file_info(root) if root else None
            bucket = root.split("/", 1)[0]
            if fs.type_name in _ATOMIC_ON_CLOSE and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StoreError(
                    f"store: bucket {bucket!r} of {uri!r} does not exist; create it first "
                    f"(e.g. aws s3 mb s3://{bucket})"
                )
        except OSError as err:
            raise StoreError(
                f"store: cannot reach {uri!r} ({err}); check the credentials, and for an S3-compatible "
                "server the endpoint_override, scheme and region options of the URI"
            ) from None
        if info is not None and info.type == pafs.FileType.File:
            raise StoreError(f"store: {uri!r} is a file, not a store directory")
        return cls(uri=str(uri), location=location, fs=fs, root=root)

    def version(self) -> int | None:
        """The store version: from ``layerswap.json``; 1 for a store written before it
        existed (it has contents but no marker); None for a location that holds no store yet."""
        if self.exists(VERSION_RELPATH):
            try:
                return int(json.loads(self.read_bytes(VERSION_RELPATH))["store_version"])
            except (ValueError, KeyError, TypeError) as err:
                marker = self.path(VERSION_RELPATH)
                raise StoreError(f"store: {marker} is not a store marker ({err})") from None
        return 1 if any(self.exists(name) for name in _CONTENT_DIRS) else None

    def require_writable_version(self, command: str) -> None:
        """Before ``command`` (sweep, analyze) writes: create the marker of a new store,
        refuse a store of another version (its ids mean something else)."""
        version = self.version()
        if version is None:
            self.write_bytes(VERSION_RELPATH, json.dumps({"store_version": STORE_VERSION}).encode("utf-8"))
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
        directory, name = final.rsplit("/", 1)
        self.fs.create_dir(directory, recursive=True)
        if self.fs.type_name in _ATOMIC_ON_CLOSE:
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        temporary = f"{directory}/_tmp-{uuid.uuid4().hex}-{name}"
        try:
            with self.fs.open_output_stream(temporary) as out:
                out.write(data)
            self.fs.move(temporary, final)
        except BaseException:
            if self.fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                self.fs.delete_file(temporary)
            raise

    def write_index(self, table: str, trial_id: str, rows: pa.Table) -> None:
        """Write one trial's rows of an index table, cast to the canonical schema."""
        self.write_table(index_relpath(table, trial_id), table, rows)

    def write_table(self, relpath: str, table: str, rows: pa.Table) -> None:
        """Write ``rows`` of index ``table`` (cast to its canonical schema) as ``relpath``."""
        buffer = io.BytesIO()
        pq.write_table(rows.cast(TABLE_SCHEMAS[table]), buffer)
        self.write_bytes(relpath, buffer.getvalue())

    def list_files(self, reldir: str) -> list[str]:
        """Paths (relative to the root) of the visible files under ``reldir``."""
        selector = pafs.FileSelector(self.path(reldir), allow_not_found=True, recursive=True)
        prefix = f"{self.root}/" if self.root else ""
        return sorted(
            info.path[len(prefix):]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and not info.base_name.startswith(("_", "."))
        )

    def read_index(self, table: str, filter: ds.Expression | None = None) -> pa.Table:
        """Read a whole index table (empty if none written yet) with its canonical schema."""
        schema = TABLE_SCHEMAS[table]
        files = [self.path(p) for p in self.list_files(f"index/{table}")]
        if not files:
            return schema.empty_table()
        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs)
        try:
            return dataset.to_table(filter=filter)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise StoreError(self._schema_problem(table, files) or f"store: {table} index: {err}") from None

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
        return {
            p.rsplit("/", 1)[-1].removesuffix(".parquet")
            for p in self.list_files("index/trials")
        }


def _castable(found: pa.DataType, expected: pa.DataType) -> bool:
    if found == expected:
        return True
    try:
        pa.array([], type=found).cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True
