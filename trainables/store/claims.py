"""Claims: how drivers writing into one store at once train each network once and measure each key once.

Before a driver (``sweep``, ``analyze``, ``verify --repair``) trains a network or measures what it
lacks, it claims the network's trial id: ``claims/<trial_id>.json`` created only if absent, holding
the claim's owner, host, process and start. The owner's liveness is its *lease*,
``claims/drivers/<owner>.json`` (owner, host, process, start, expiry), rewritten every
:data:`REFRESH_SECONDS` while the driver lives and valid for :data:`LEASE_SECONDS` (one write per
interval however many networks it holds). A claim whose lease is gone or expired belongs to a
driver that died: another driver takes it over with a compare-and-swap, so only one of several
can. A lease also names the owner's *process space* (host, boot, pid namespace): a driver in the
same space sees at once whether the owner's process still exists, so a rerun on the machine
where a driver crashed takes its claims over without waiting for the lease to expire. A driver
deletes its claims when their work is done, then its lease.

Atomic create-if-absent, per filesystem (pyarrow.fs has none):

- local paths, NFS: the claim is written whole to a temporary name and hard-linked to its name
  (``link`` fails if the name exists, atomically, also on NFS); where hard links are refused,
  ``open(O_CREAT | O_EXCL)``. Takeover: the expired claim is renamed away (one rename wins), checked
  to be the one seen, and the name created afresh.
- s3://: a conditional PUT (``If-None-Match: *``; takeover ``If-Match: <etag>``), which AWS S3 and
  S3-compatible servers such as MinIO and moto honour. pyarrow's S3 filesystem cannot send these
  headers (it drops them silently), so the request goes through boto3, when it is installed.
- anything else (or S3 without boto3): no atomic create. Claims are then best effort (check, then
  write): :attr:`Claims.warning` is the one line a driver prints at start.

Hosts' clocks must agree to well within :data:`LEASE_SECONDS` (a lease's expiry is the owner's clock).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from trainables.store import Store, layout

LEASE_SECONDS = 90.0
"""How long a driver's lease stays valid after its last refresh."""
REFRESH_SECONDS = 15.0
"""How often a live driver rewrites its lease."""
PARALLEL = 16
"""Claims made, read or released at once (each is a request on an object store)."""


def process_space() -> str:
    """What makes this process's id mean one process: the host, its boot and its pid namespace
    (``""`` where /proc cannot tell: then only a lease's expiry says a driver died)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists in this pid namespace (one of another user's exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: its owner (a driver's random id), host, process id and start (UTC, ISO)."""

    owner: str
    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}, pid {self.pid}, since {self.started[11:19]} UTC"

    def to_bytes(self, **extra: object) -> bytes:
        record = {"owner": self.owner, "host": self.host, "pid": self.pid, "started": self.started, **extra}
        return json.dumps(record, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        try:
            record = json.loads(data)
            return cls(str(record["owner"]), str(record["host"]), int(record["pid"]), str(record["started"]))
        except (ValueError, KeyError, TypeError):
            return None


class AtomicFiles(Protocol):
    """The three operations claims need from a filesystem; ``version`` is opaque (bytes or an etag)."""

    atomic: bool

    def create(self, relpath: str, data: bytes) -> bool:
        """Create ``relpath`` holding ``data`` only if it does not exist; whether this call created it."""

    def read(self, relpath: str) -> tuple[bytes, object] | None:
        """(contents, version) of ``relpath``, None if it does not exist."""

    def replace(self, relpath: str, version: object, data: bytes) -> bool:
        """Replace ``relpath`` with ``data`` only if it is still at ``version``; whether it was."""


class LocalFiles:
    """Atomic create on a local or NFS path: a whole temporary file hard-linked to its name."""

    atomic = True

    def __init__(self, store: Store) -> None:
        self.store = store

    def _path(self, relpath: str) -> str:
        return self.store.path(relpath)

    def create(self, relpath: str, data: bytes) -> bool:
        path = self._path(relpath)
        directory, name = path.rsplit("/", 1)
        os.makedirs(directory, exist_ok=True)
        temporary = f"{directory}/{layout.temporary_name(name)}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            return self._create_exclusive(path, data)  # a filesystem without hard links
        finally:
            os.unlink(temporary)

    @staticmethod
    def _create_exclusive(path: str, data: bytes) -> bool:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        return True

    def read(self, relpath: str) -> tuple[bytes, object] | None:
        try:
            with open(self._path(relpath), "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            return None
        return data, data

    def replace(self, relpath: str, version: object, data: bytes) -> bool:
        path = self._path(relpath)
        directory, name = path.rsplit("/", 1)
        moved = f"{directory}/{layout.temporary_name(name)}"
        try:
            os.rename(path, moved)  # of several drivers taking over, one rename wins
        except FileNotFoundError:
            return self.create(relpath, data)
        with open(moved, "rb") as stream:
            taken = stream.read()
        if taken != version:  # a claim created after we looked: put it back
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
            os.unlink(moved)
            return False
        os.unlink(moved)
        return self.create(relpath, data)


LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict")
"""S3's answers to a conditional PUT that another writer beat."""


class S3Files:
    """Atomic create on S3 with conditional PUTs (boto3: pyarrow cannot send the headers)."""

    atomic = True

    def __init__(self, store: Store) -> None:
        import boto3  # only here: the rest of layerswap never needs it
        from botocore.config import Config

        parts = urlsplit(store.location)
        options = dict(parse_qsl(parts.query))
        endpoint = options.get("endpoint_override")
        scheme = options.get("scheme", "https")
        key_id, _, secret = parts.netloc.rpartition("@")[0].partition(":")
        session = boto3.session.Session(
            aws_access_key_id=unquote(key_id) or options.get("access_key"),
            aws_secret_access_key=unquote(secret) or options.get("secret_key"),
            aws_session_token=options.get("session_token"),
            region_name=options.get("region") or getattr(store.fs, "region", None) or None,
        )
        if endpoint and "://" not in endpoint:
            endpoint = f"{scheme}://{endpoint}"
        self.client = session.client(
            "s3", endpoint_url=endpoint or None,
            config=Config(retries={"max_attempts": 3}, connect_timeout=10, read_timeout=30),
        )
        self.bucket, _, self.prefix = store.root.partition("/")
        self.errors = self.client.exceptions

    def _key(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def _put(self, relpath: str, data: bytes, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(relpath), Body=data, **condition)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in LOST_RACE:
                return False
            raise

    def create(self, relpath: str, data: bytes) -> bool:
        return self._put(relpath, data, IfNoneMatch="*")

    def read(self, relpath: str) -> tuple[bytes, object] | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(relpath))
        except self.errors.NoSuchKey:
            return None
        return answer["Body"].read(), answer["ETag"]

    def replace(self, relpath: str, version: object, data: bytes) -> bool:
        return self._put(relpath, data, IfMatch=str(version))


class BestEffortFiles:
    """No atomic create: check, then write (two drivers starting in the same instant may both win)."""

    atomic = False

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, relpath: str, data: bytes) -> bool:
        if self.store.exists(relpath):
            return False
        self.store.write_bytes(relpath, data)
        return True

    def read(self, relpath: str) -> tuple[bytes, object] | None:
        if not self.store.exists(relpath):
            return None
        data = self.store.read_bytes(relpath)
        return data, data

    def replace(self, relpath: str, version: object, data: bytes) -> bool:
        found = self.read(relpath)
        if found is not None and found[0] != version:
            return False
        self.store.write_bytes(relpath, data)
        return True


def atomic_files(store: Store) -> tuple[AtomicFiles, str | None]:
    """The claim operations for ``store``'s filesystem, and the one-line warning when it offers no
    atomic create (None when it does)."""
    kind = store.fs.type_name
    if kind == "local":
        return LocalFiles(store), None
    if kind == "s3":
        try:
            return S3Files(store), None
        except ImportError:
            why = "pyarrow's S3 filesystem cannot send a conditional PUT, and boto3 is not installed"
    else:
        why = f"pyarrow's {kind} filesystem cannot create a file only if it is absent"
    return BestEffortFiles(store), (
        f"store: {store.uri} offers no atomic create ({why}): claims are best effort, so two drivers "
        "started at the same moment may both train or measure one network"
    )


class Claims:
    """One driver's claims on a store, and its lease (see the module docstring). A context manager:
    the lease is written on entry and refreshed by a daemon thread; on exit every claim still held
    is deleted, then the lease."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files, self.warning = atomic_files(store)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.me = Holder(uuid.uuid4().hex[:16], socket.gethostname(), os.getpid(), now)
        self.space = process_space()
        self.held: set[str] = set()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def __enter__(self) -> Claims:
        self._write_lease()
        self._refresher = threading.Thread(target=self._refresh, name="layerswap-lease", daemon=True)
        self._refresher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.release(sorted(self.held))
        self.store.delete(layout.lease_path(self.me.owner))

    def _write_lease(self) -> None:
        lease = self.me.to_bytes(expires=time.time() + LEASE_SECONDS, space=self.space)
        self.store.write_bytes(layout.lease_path(self.me.owner), lease)

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self._write_lease()
            except Exception:  # noqa: BLE001 - a missed refresh is retried; the lease lasts six of them
                continue

    def alive(self, holder: Holder) -> bool:
        """Whether ``holder``'s lease exists and has not expired, and, where its owner ran in this
        driver's process space, whether the owner's process still exists."""
        if holder.owner == self.me.owner:
            return True
        found = self.files.read(layout.lease_path(holder.owner))
        if found is None:
            return False
        try:
            lease = json.loads(found[0])
            if float(lease["expires"]) <= time.time():
                return False
        except (ValueError, KeyError, TypeError):
            return False
        here = bool(self.space) and lease.get("space") == self.space
        return not (here and process_gone(holder.pid))

    def take(self, trial_ids: list[str]) -> tuple[list[str], dict[str, Holder]]:
        """Claim each of ``trial_ids``: (those now held by this driver, in order; the others with the
        live driver that holds each). A claim of a driver that died is taken over. Claims are made
        :data:`PARALLEL` at a time (on S3 each is a request)."""
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="layerswap-claim") as pool:
            holders = list(pool.map(self._claim, trial_ids))
        mine = [trial_id for trial_id, holder in zip(trial_ids, holders, strict=True) if holder is None]
        self.held.update(mine)
        theirs = {trial_id: holder for trial_id, holder in zip(trial_ids, holders, strict=True) if holder}
        return mine, theirs

    def _claim(self, trial_id: str) -> Holder | None:
        """None when this driver holds ``trial_id``'s claim now, else the live driver that does."""
        relpath = layout.claim_path(trial_id)
        data = self.me.to_bytes()
        for _ in range(3):  # each turn loses only to a driver that changed the claim meanwhile
            if self.files.create(relpath, data):
                return None
            found = self.files.read(relpath)
            if found is None:
                continue  # released meanwhile
            holder = Holder.from_bytes(found[0])
            if holder is not None and holder.owner == self.me.owner:
                return None
            if holder is not None and self.alive(holder):
                return holder
            if self.files.replace(relpath, found[1], data):  # its driver died: take it over
                return None
        found = self.files.read(relpath)
        holder = Holder.from_bytes(found[0]) if found is not None else None
        return holder or Holder("?", "?", 0, "?")

    def holder(self, trial_id: str) -> Holder | None:
        """The live driver other than this one that holds ``trial_id``'s claim; None if none does."""
        found = self.files.read(layout.claim_path(trial_id))
        holder = Holder.from_bytes(found[0]) if found is not None else None
        if holder is None or holder.owner == self.me.owner or not self.alive(holder):
            return None
        return holder

    def holders(self, trial_ids: list[str]) -> dict[str, Holder]:
        """Of ``trial_ids``, those a live driver other than this one holds, with that driver."""
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="layerswap-claim") as pool:
            found = list(pool.map(self.holder, trial_ids))
        return {trial_id: holder for trial_id, holder in zip(trial_ids, found, strict=True) if holder}

    def release(self, trial_ids: list[str]) -> None:
        """Delete this driver's claims on ``trial_ids`` (their work is done or abandoned)."""
        mine = [trial_id for trial_id in trial_ids if trial_id in self.held]
        self.held.difference_update(mine)
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="layerswap-claim") as pool:
            list(pool.map(self._release, mine))

    def _release(self, trial_id: str) -> None:
        found = self.files.read(layout.claim_path(trial_id))
        holder = Holder.from_bytes(found[0]) if found is not None else None
        if holder is not None and holder.owner == self.me.owner:
            self.store.delete(layout.claim_path(trial_id))
