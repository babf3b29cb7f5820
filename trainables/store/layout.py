"""The store's layout: every relative path and file-name pattern, and the one parser of index file names.

Layout (DESIGN.md, "The store")::

    trials/<trial_id>/spec.json                        canonical training spec
    trials/<trial_id>/weights/epoch=<EEEE>.safetensors one file per checkpoint
    index/<table>/<trial_id>.parquet                   a trial's rows of one index table
    index/<table>/<trial_id>-<batch>.parquet           rows measured later (swaps, criticality)
    sweeps/<sweep>/<hash>.json                         a sweep's config and expected trial ids
    claims/<trial_id>.json                             a driver training or measuring that network now
    claims/drivers/<owner>.json                        that driver's lease (refreshed while it lives)
    wandb/<sweep>/<trial_id>/offline-run-*/            offline W&B runs of other nodes
    report/                                            the store's report
    layerswap.json                                     {"store_version": 2}
    tune/                                              Ray Tune's own state

A file is written under a temporary name (``_<name>.<random>.tmp``) and then
renamed; names starting with ``_`` or ``.`` are never store files, so readers
skip them. Trial ids are checked (16 lowercase hex characters) before any
becomes part of a path, so a crafted row cannot point outside its folder.
Every module that needs a path asks this one; nothing else spells one out.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from trainables.errors import StoreError

TRIAL_ID = re.compile(r"[0-9a-f]{16}")
"""A trial id: the first 16 lowercase hex characters of a sha256."""

STORE_MARKER = "layerswap.json"
"""The store's version marker: ``{"store_version": N}``."""
CONTENT_DIRS = ("index", "trials", "sweeps")
"""Folders whose presence, without a marker, makes a location a version-1 store."""
INDEX_DIR = "index"
SWEEPS_DIR = "sweeps"
CLAIMS_DIR = "claims"
"""Claims of drivers writing now (:mod:`trainables.store.claims`); no reader of results looks here."""
TUNE_DIR = "tune"
REPORT_DIR = "report"
PREFLIGHT_DIR = "_preflight"
"""Where ``layerswap preflight``'s node probes write (hidden from every reader)."""

TABLES = ("trials", "weights", "swaps", "layers", "criticality")
BATCH_TABLES = frozenset({"swaps", "layers", "criticality"})
"""Tables whose measurements made later go to ``<trial_id>-<batch>.parquet`` files (``layers``: the
movement of groups asked for after the network's own file was written)."""

_INDEX_NAME = re.compile(r"(?P<stem>.+?)(?:-(?P<batch>[0-9a-f]{8}))?\.parquet")


def check_trial_id(trial_id: str) -> str:
    """``trial_id`` if it is 16 lowercase hex characters, else StoreError: never a path outside its folder."""
    if not isinstance(trial_id, str) or not TRIAL_ID.fullmatch(trial_id):
        raise StoreError(f"store: {str(trial_id)[:40]!r} is not a trial id (16 lowercase hex characters)")
    return trial_id


def is_hidden(base_name: str) -> bool:
    """Temporary files, probes and other leftovers: names starting with ``_`` or ``.``."""
    return base_name.startswith(("_", "."))


def temporary_name(name: str) -> str:
    """The name ``name`` is written under before its rename: ``_<name>.<random>.tmp``."""
    return f"_{name}.{uuid.uuid4().hex[:12]}.tmp"


def probe_name() -> str:
    """The write probe's file at the root: ``_probe-<random>.tmp``."""
    return f"_probe-{uuid.uuid4().hex}.tmp"


def trial_dir(trial_id: str) -> str:
    return f"trials/{check_trial_id(trial_id)}"


def spec_path(trial_id: str) -> str:
    return f"{trial_dir(trial_id)}/spec.json"


def weights_path(trial_id: str, epoch: int) -> str:
    """A checkpoint's safetensors file (epoch zero-padded to 4 digits)."""
    return f"{trial_dir(trial_id)}/weights/epoch={epoch:04d}.safetensors"


def index_dir(table: str) -> str:
    return f"{INDEX_DIR}/{table}"


def index_path(table: str, trial_id: str) -> str:
    """A trial's file of index ``table`` (for swaps: the rows measured when it was trained)."""
    return f"{index_dir(table)}/{trial_id}.parquet"


def batch_path(table: str, trial_id: str, keys: bytes) -> str:
    """Where a later batch of a trial's rows of ``table`` goes: ``<trial_id>-<batch>.parquet``,
    ``<batch>`` the first 8 hex characters of the sha256 of the canonical bytes of its sorted keys."""
    if table not in BATCH_TABLES:
        raise ValueError(f"index/{table} has no batch files")
    return f"{index_dir(table)}/{trial_id}-{hashlib.sha256(keys).hexdigest()[:8]}.parquet"


def sweep_record_path(sweep: str, record: bytes) -> str:
    """A sweep's record, named by the first 16 hex characters of the sha256 of its bytes."""
    return f"{SWEEPS_DIR}/{sweep}/{hashlib.sha256(record).hexdigest()[:16]}.json"


def claim_path(trial_id: str) -> str:
    """A driver's claim on a network it trains or measures now."""
    return f"{CLAIMS_DIR}/{check_trial_id(trial_id)}.json"


def lease_path(owner: str) -> str:
    """The lease of the driver ``owner`` (16 lowercase hex characters, as a trial id)."""
    if not TRIAL_ID.fullmatch(owner):
        raise StoreError(f"store: {owner[:40]!r} is not a driver id (16 lowercase hex characters)")
    return f"{CLAIMS_DIR}/drivers/{owner}.json"


def is_sweep_record(relpath: str) -> bool:
    return relpath.startswith(f"{SWEEPS_DIR}/") and relpath.endswith(".json")


def wandb_runs_dir(sweep: str) -> str:
    """The store folder of a sweep's offline W&B runs from other nodes: one ``<trial_id>/`` each."""
    return f"wandb/{sweep}"


@dataclass(frozen=True)
class IndexFile:
    """An index file's path, as its name reads: the trial id it is named after and its batch.

    ``trial_id`` is the name's stem as written; :attr:`named_after_a_trial` says whether it is
    a trial id and the name has the form its table allows (batch files only for
    :data:`BATCH_TABLES`). Readers take the name as it is; ``verify`` names the others.
    """

    table: str
    relpath: str
    trial_id: str
    batch: str | None

    @property
    def named_after_a_trial(self) -> bool:
        return bool(TRIAL_ID.fullmatch(self.trial_id)) and (self.batch is None or self.table in BATCH_TABLES)

    @property
    def is_base(self) -> bool:
        """The trial's own file of the table (not a later batch)."""
        return self.batch is None


def parse_index_path(relpath: str) -> IndexFile | None:
    """The :class:`IndexFile` of ``index/<table>/<name>.parquet``; None for any other path."""
    parts = relpath.split("/")
    if len(parts) != 3 or parts[0] != INDEX_DIR or is_hidden(parts[2]):
        return None
    match = _INDEX_NAME.fullmatch(parts[2])
    if match is None:
        return None
    if match["batch"] is not None and parts[1] not in BATCH_TABLES:  # "<id>-<8 hex>" is then the stem
        return IndexFile(parts[1], relpath, f"{match['stem']}-{match['batch']}", None)
    return IndexFile(parts[1], relpath, match["stem"], match["batch"])
