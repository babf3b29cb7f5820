"""What a swap moves, movement measures and criticality perturbs: layers, and groups of layers.

A group (a residual block ``layer2.0``, a stage ``layer2`` or ``stage3``; DESIGN.md,
"Layers and layer groups") is measured as one unit: a :class:`~trainables.models.family.Layer`
whose modules, parameters and buffers are those of its layers together, so every measurement
that takes a layer takes a group unchanged. A group of a single layer is not a unit of its
own: its layer's rows serve for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from trainables.models.family import Layer, LayerGroup, ModelFamily
from trainables.plan import GROUP_LEVELS


def group_unit(group: LayerGroup, layers: Mapping[str, Layer]) -> Layer:
    """``group`` as one unit: its layers' modules and tensors in forward order, the index of its
    first layer, its level as ``module_type`` and ``level``."""
    members = [layers[name] for name in group.layers]
    return Layer(
        group.name, members[0].index, group.level,
        tuple(path for layer in members for path in layer.modules),
        tuple(key for layer in members for key in layer.parameters),
        tuple(key for layer in members for key in layer.buffers),
        group.level,
    )


def measured_units(
    family: ModelFamily, model: nn.Module, levels: Iterable[str] = GROUP_LEVELS
) -> tuple[Layer, ...]:
    """The network's layers, then its groups of ``levels`` (default every level) that hold more
    than one layer, each in forward order."""
    layers = family.layers(model)
    wanted = set(levels)
    if family.groups is None or wanted <= {"layer"}:
        return layers
    by_name = {layer.name: layer for layer in layers}
    groups = tuple(
        group_unit(group, by_name) for group in family.groups(model)
        if group.level in wanted and len(group.layers) > 1
    )
    return layers + groups
