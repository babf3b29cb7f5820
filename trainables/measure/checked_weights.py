"""Reading a network's stored weights checked against ``index/weights``, before anything uses them.

Every tensor of a checkpoint file is compared with its ``index/weights`` row: the same tensor
names, shape, dtype, byte count and the sha256 of its raw bytes. A file that is missing, is not
a safetensors file or differs in any of these raises :class:`~trainables.errors.WeightsDamaged`
with one line naming the file, its epoch and what differs; nothing measured from it is written.

Which trials are checked: every trial with a trial row (a finished network: ``index/weights``
holds its rows, and a trial row without them is itself damage). A trial without a trial row is a
training run reading back its own checkpoints to resume; it has no index rows yet, so there is
nothing to check against.

Hashing costs one sha256 pass over the bytes read (see README, "Failures, re-runs and checks").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch
from safetensors import SafetensorError

from trainables.errors import StoreError, WeightsDamaged
from trainables.models.family import StateDict
from trainables.spec import TrialSpec
from trainables.store import Store, layout

ROWS_BY_EPOCH = dict[int, list[dict]]
"""A trial's ``index/weights`` rows, by epoch."""


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes in C order (any dtype), hashed without another copy when the
    tensor is already contiguous on the CPU."""
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(raw)).hexdigest()


def tensor_facts(tensor: torch.Tensor) -> dict:
    """What ``index/weights`` records of a tensor besides its name: shape, dtype, bytes, sha256."""
    return {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "nbytes": tensor.numel() * tensor.element_size(),
        "sha256": tensor_sha256(tensor),
    }


def differences(tensors: dict[str, torch.Tensor], rows: list[dict]) -> list[str]:
    """How the tensors of one file differ from their ``index/weights`` rows (empty: they match),
    e.g. ``tensor 'fc1.weight': sha256 is 3f2a…, index/weights says 9c01…``."""
    found: list[str] = []
    for row in rows:
        name = row["tensor"]
        tensor = tensors.get(name)
        if tensor is None:
            found.append(f"tensor {name!r} is in index/weights but not in the file")
            continue
        for column, value in tensor_facts(tensor).items():
            said = row[column]
            if value != said:
                if column == "sha256":
                    value, said = f"{value[:12]}…", f"{str(said)[:12]}…"
                found.append(f"tensor {name!r}: {column} is {value}, index/weights says {said}")
    found += [
        f"tensor {name!r} is in the file but not in index/weights"
        for name in sorted(set(tensors) - {row["tensor"] for row in rows})
    ]
    return found


def indexed_rows(store: Store, trial_id: str) -> ROWS_BY_EPOCH | None:
    """The trial's ``index/weights`` rows by epoch; None for a trial without a trial row (a training
    run resuming: nothing indexed yet). WeightsDamaged when a finished trial has no readable rows."""
    relpath = layout.index_path("weights", trial_id)
    if not store.exists(relpath):
        if not store.exists(layout.index_path("trials", trial_id)):
            return None
        raise WeightsDamaged(f"{relpath} is missing: the weights of trial {trial_id} cannot be checked")
    try:
        table = pq.read_table(store.path(relpath), filesystem=store.fs,
                              columns=["epoch", "tensor", "shape", "dtype", "nbytes", "sha256"])
    except (pa.ArrowException, OSError) as err:
        raise WeightsDamaged(f"{relpath} is not a readable index of trial {trial_id}'s weights "
                             f"({str(err).splitlines()[0][:120]})") from None
    by_epoch: ROWS_BY_EPOCH = {}
    for row in table.to_pylist():
        by_epoch.setdefault(row["epoch"], []).append(row)
    return by_epoch


def read_checked(store: Store, trial_id: str, epoch: int, rows: list[dict] | None) -> StateDict:
    """The tensors of the trial's checkpoint ``epoch`` on the CPU, checked against ``rows`` (its
    ``index/weights`` rows; None: not checked). WeightsDamaged (one line) when they differ."""
    relpath = layout.weights_path(trial_id, epoch)
    where = f"{relpath} (epoch {epoch})"
    if rows is not None and not rows:
        raise WeightsDamaged(f"{where}: index/weights has no rows for this checkpoint")
    try:
        tensors = safetensors.torch.load(store.read_bytes(relpath))
    except StoreError:
        raise WeightsDamaged(f"{where} is missing") from None
    except SafetensorError as err:
        raise WeightsDamaged(f"{where} is not a readable safetensors file ({err})") from None
    if rows is not None:
        found = differences(tensors, rows)
        if found:
            more = f" (and {len(found) - 1} more difference(s))" if len(found) > 1 else ""
            raise WeightsDamaged(f"{where}: {found[0]}{more}")
    return tensors


def load_checked(
    store: Store, spec: TrialSpec, device: torch.device, epochs: Iterable[int] | None = None
) -> dict[int, StateDict]:
    """The stored weights of ``spec``'s checkpoints (all, or ``epochs``) on ``device``, each file
    checked against ``index/weights`` before use (see the module docstring)."""
    rows = indexed_rows(store, spec.trial_id)
    wanted = spec.checkpoints if epochs is None else sorted(set(epochs))
    return {
        epoch: {
            key: value.to(device)
            for key, value in read_checked(
                store, spec.trial_id, epoch, None if rows is None else rows.get(epoch, [])
            ).items()
        }
        for epoch in wanted
    }
