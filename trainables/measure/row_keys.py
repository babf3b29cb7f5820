"""What a stored network lacks, and where the rows measured for it later go: the keys of its
measurement rows and the batch files they name. Free of torch, for the driver, which plans
with these before any worker has started."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trainables.plan import CriticalitySettings, SwapKey
from trainables.spec import canonical_bytes
from trainables.store import layout

CriticalityKey = tuple
"""(layer, *:meth:`CriticalitySettings.key`) of a criticality row: the layer, the search and every
setting it uses, and the subset size."""


def criticality_key(layer: str, settings: CriticalitySettings, n_train: int) -> CriticalityKey:
    """The key of ``layer``'s criticality row under ``settings`` on a training set of ``n_train``."""
    return (layer, *settings.key(min(settings.subset, n_train)))


def criticality_row_key(row: dict) -> CriticalityKey:
    """The key of a stored criticality row (a dict with the criticality table's columns; one
    without ``search`` is a grid row)."""
    return (row["layer"], *CriticalitySettings.of_row(row).key(row["subset_size"]))


@dataclass(frozen=True)
class Missing:
    """What one stored network lacks: swap ``keys``, the weight movement of the layers and groups
    ``movement`` (every layer when its movement file is absent; groups asked for later), and the
    ``criticality`` (under ``settings``) of ``criticality_layers``."""

    keys: tuple[SwapKey, ...] = ()
    movement: tuple[str, ...] = ()
    criticality_layers: tuple[str, ...] = ()
    settings: CriticalitySettings | None = None

    def __bool__(self) -> bool:
        return bool(self.keys or self.movement or self.criticality_layers)


def _sortable(key: SwapKey) -> tuple:
    return tuple((value is None, "" if value is None else value) for value in key)


def batch_relpath(trial_id: str, keys: Iterable[SwapKey]) -> str:
    """Where a later batch of a trial's swap rows goes: named by the hash of its sorted keys."""
    return layout.batch_path("swaps", trial_id, canonical_bytes(sorted(keys, key=_sortable)))


def movement_batch_relpath(trial_id: str, units: Iterable[str]) -> str:
    """Where the movement of groups measured after a network's own movement file goes: named by
    the hash of their sorted names."""
    return layout.batch_path("layers", trial_id, canonical_bytes(sorted(set(units))))


def criticality_batch_relpath(trial_id: str, keys: Iterable[CriticalityKey]) -> str:
    """Where a later batch of a trial's criticality rows goes: named by the hash of its keys."""
    return layout.batch_path("criticality", trial_id, canonical_bytes(sorted(keys)))
