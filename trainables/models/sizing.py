"""What the driver needs of a model family to plan its trials: whether it packs, where ``pack: auto``
packs it, how it evaluates swap variants, and its footprint formula.

A family's :class:`~trainables.models.family.ModelFamily` holds these with the rest (its
``sizing``); a family whose module would import torch only for them declares them in a module of
their own (the MLP's, :mod:`trainables.models.mlp_footprint`), so that a sweep of it plans without
torch (:func:`trainables.models.registry.sizing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from trainables.train.pack_shape import NetworkFootprint


class FootprintFormula(Protocol):
    def __call__(
        self, widths: tuple[int, ...], input_shape: tuple[int, ...], n_classes: int, batch: int
    ) -> NetworkFootprint:
        """The :class:`~trainables.train.pack_shape.NetworkFootprint` of the family's network with
        ``widths`` on samples of ``input_shape``, ``batch`` samples per step: the figures the meta
        device gives, without running it."""
        ...


@dataclass(frozen=True)
class FamilySizing:
    """``packable``: the family has a stacked form (trains networks together). ``auto_pack_devices``:
    the device types on which ``pack: auto`` packs it. ``variant_tree``: it evaluates swap variants
    as a tree with cached activations (else one variant at a time). ``footprint``: its formula (None:
    measured on the meta device)."""

    packable: bool
    auto_pack_devices: frozenset[str]
    variant_tree: bool
    footprint: FootprintFormula | None
