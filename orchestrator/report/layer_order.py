"""Where each layer sits in its network: the one order of layers the report and its tables use.

A configuration's layers are ordered by ``layer_index``, their 0-based position
in the forward pass (DESIGN.md, "Layers and layer groups"), never by name
(``layer1.10.conv1`` comes after ``layer1.9.conv2``, ``fc`` after every
``layer*``). The index comes from the ``layers`` table; a store written before
that table had ``layer_index`` and ``module_type`` gets them from the spec's
family, its network built on the meta device (no weights). A name the order
does not know (a custom model whose factory cannot be imported here) sorts
after the known layers, by name.

Relative depth, the compare figure's axis: ``layer_index / (n_layers - 1)``,
0 = the first layer, 1 = the output layer (0 for a one-layer network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

from trainables.data.catalog import CATALOG
from trainables.errors import UserError
from trainables.spec import TrialSpec


@dataclass(frozen=True)
class NetworkLayers:
    """One configuration's layers in forward order: ``names[i]`` has ``layer_index`` i and
    ``module_types[i]`` (``linear``, ``conv``, or a custom model's module class name)."""

    names: tuple[str, ...]
    module_types: tuple[str, ...]
    positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {name: i for i, name in enumerate(self.names)})

    def index(self, layer: str) -> int | None:
        """The layer's ``layer_index``, None for a name that is not one of the layers."""
        return self.positions.get(layer)

    def depth(self, layer: str) -> float | None:
        """``layer_index / (n_layers - 1)``; None for a name that is not one of the layers."""
        index = self.index(layer)
        if index is None:
            return None
        return index / (len(self.names) - 1) if len(self.names) > 1 else 0.0


LayerOrder = dict[str, NetworkLayers]
"""config_id -> its networks' layers (every seed of a configuration has the same architecture)."""


def _from_spec(spec_json: str | None, n_classes: int | None) -> NetworkLayers | None:
    """The order the spec's family declares; None where the network cannot be built here (no
    spec or one this version cannot read, a custom model's factory not importable, a dataset this
    version does not know)."""
    if spec_json is None:
        return None
    # Imported here, not at the top: a report of a store whose layers table carries the
    # index never needs torch.
    import torch

    from trainables.models import registry

    try:
        spec = TrialSpec.from_dict(json.loads(spec_json))
    except (UserError, ValueError, TypeError, KeyError):
        return None  # not a spec this version can read (a hand-written or damaged spec.json)
    info = CATALOG.get(spec.dataset)
    if info is None:
        return None
    try:
        with torch.device("meta"):
            network = registry.spec_network(spec, info.input_shape, n_classes or info.n_classes)
        layers = registry.family(spec.model).layers(network)
    except (UserError, ValueError):
        return None
    return NetworkLayers(tuple(layer.name for layer in layers), tuple(layer.module_type for layer in layers))


def config_ids_of(trials: pa.Table) -> dict[str, str]:
    """trial_id -> config_id of ``trials`` (a version-1 row has none: computed from its spec)."""
    return {
        trial_id: config_id or TrialSpec.from_dict(json.loads(spec_json)).config_id
        for trial_id, config_id, spec_json in zip(
            trials.column("trial_id").to_pylist(), trials.column("config_id").to_pylist(),
            trials.column("spec_json").to_pylist(), strict=True,
        )
    }


def layer_order(trials: pa.Table, layers: pa.Table) -> LayerOrder:
    """The layers of each configuration of ``trials``: from the ``layers`` rows that carry
    ``layer_index`` of its trials, else from its first trial's spec (absent where neither gives
    one)."""
    configs = config_ids_of(trials)
    indexed: dict[str, set[tuple[int, str, str]]] = {}
    for trial_id, index, layer, kind in zip(
        *(layers.column(c).to_pylist() for c in ("trial_id", "layer_index", "layer", "module_type")),
        strict=True,
    ):
        if index is not None and trial_id in configs:
            indexed.setdefault(configs[trial_id], set()).add((index, layer, kind))
    order: LayerOrder = {
        config_id: NetworkLayers(tuple(name for _, name, _ in sorted(found)),
                                 tuple(kind for _, _, kind in sorted(found)))
        for config_id, found in indexed.items()
    }
    tried: set[str] = set()
    for row in trials.select(["trial_id", "spec_json", "n_classes"]).to_pylist():
        config_id = configs[row["trial_id"]]
        if config_id in order or config_id in tried:
            continue
        tried.add(config_id)
        found = _from_spec(row["spec_json"], row["n_classes"])
        if found is not None:
            order[config_id] = found
    return order


def with_layer_columns(layers: pa.Table, trials: pa.Table, order: LayerOrder) -> pa.Table:
    """``layers`` rows with ``layer_index`` and ``module_type`` filled where a row written before
    those columns has them null (from ``order``, by the row's trial's configuration)."""
    index = layers.column("layer_index")
    if not index.null_count:
        return layers
    configs = config_ids_of(trials)
    filled_index, filled_type = [], []
    for trial_id, layer, value, kind in zip(
        layers.column("trial_id").to_pylist(), layers.column("layer").to_pylist(), index.to_pylist(),
        layers.column("module_type").to_pylist(), strict=True,
    ):
        network = order.get(configs.get(trial_id, ""))
        if value is None and network is not None and network.index(layer) is not None:
            value = network.index(layer)
            kind = network.module_types[value]
        filled_index.append(value)
        filled_type.append(kind)
    layers = layers.set_column(layers.schema.get_field_index("layer_index"), "layer_index",
                               pa.array(filled_index, pa.int32()))
    return layers.set_column(layers.schema.get_field_index("module_type"), "module_type",
                             pa.array(filled_type, pa.string()))
