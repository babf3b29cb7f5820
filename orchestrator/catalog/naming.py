"""Names of configurations: what distinguishes each one within its sweep, its hash as a suffix.

A configuration is a training spec without its seed (DESIGN.md, "Identity").
Within a sweep, :func:`name_configs` names each one by the training-spec
fields whose values differ between the sweep's configurations (``lr 0.1``,
``widths 256-128``), followed by the first 8 characters of its ``config_id``,
and puts them in the one order every listing uses (``layerswap ls``, the
report's tables, headings and legends): by those values, numbers by
magnitude, then by id. A sweep of one configuration is named by its model
and widths.

Pure Python on plain mappings, so that the CLI, ``ls`` and the sweep's plan
lines (:func:`configuration_labels`) can import it without pandas or torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from trainables.spec import V1_MEASUREMENT_FIELDS

if TYPE_CHECKING:
    from trainables.spec import TrialSpec

SHORT_NAMES = {
    "optimizer.lr": "lr",
    "optimizer.momentum": "momentum",
    "optimizer.weight_decay": "weight decay",
    "optimizer.nesterov": "nesterov",
    "batch_size": "batch",
    "data_mean": "data mean",
    "data_std": "data std",
}
"""How a field is written in a name (the last part of its dotted key otherwise)."""

BARE_VALUES = frozenset(
    {"dataset", "model", "optimizer.name", "precision", "norm", "augment", "schedule.name"}
)
"""Fields whose value says what it is (``adam``, ``vgg11``, ``bf16``): written without their key."""

FIELD_ORDER = ("dataset", "model", "widths", "optimizer.name", "optimizer.lr", "optimizer.momentum",
               "optimizer.weight_decay", "batch_size", "epochs")
"""Fields first in a name, in this order; any other distinguishing field follows, alphabetically."""

FOLLOWS_FROM = {"data_mean": "dataset", "data_std": "dataset", "checkpoints": "epochs"}
"""A field left out of a name when the field it follows from distinguishes the configuration too."""

ONE_CONFIG_FIELDS = ("model", "widths")
"""What names the configuration of a sweep that has only one."""

HASH_CHARS = 8


def flat_training_spec(spec: Mapping[str, object]) -> dict[str, object]:
    """A training spec (``spec.json`` as a dict) without ``seed``, nested blocks flattened to dotted
    keys (``optimizer.lr``) and lists made tuples."""
    flat: dict[str, object] = {}

    def visit(block: Mapping[str, object], prefix: str) -> None:
        for name, value in block.items():
            if isinstance(value, Mapping):
                visit(value, f"{prefix}{name}.")
            elif f"{prefix}{name}" != "seed":
                flat[f"{prefix}{name}"] = tuple(value) if isinstance(value, list) else value

    visit(spec, "")
    return flat


def distinguishing_fields(specs: Iterable[Mapping[str, object]]) -> list[str]:
    """The fields whose values are not the same in all of ``specs`` (a missing field counts as a
    value of its own), in name order (``FIELD_ORDER`` first)."""
    specs = list(specs)
    names = {name for spec in specs for name in spec}
    differing = {name for name in names if len({repr(spec.get(name)) for spec in specs}) > 1}
    kept = {name for name in differing if FOLLOWS_FROM.get(name) not in differing}
    first = {name: position for position, name in enumerate(FIELD_ORDER)}
    return sorted(kept, key=lambda name: (first.get(name, len(FIELD_ORDER)), name))


def format_value(value: object) -> str:
    """``(256, 128)`` -> ``256-128``, ``0.1`` -> ``0.1``, ``True`` -> ``on``, ``None`` -> ``none``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return "-".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


MISSING = object()
"""A field a spec does not hold: written only off its default, so it has its default value."""


def _part(field: str, value: object) -> str:
    shown = "default" if value is MISSING else format_value(value)
    if field in BARE_VALUES:
        return f"{field} {shown}" if value is MISSING else shown
    return f"{SHORT_NAMES.get(field, field.rsplit('.', 1)[-1])} {shown}"


def order_key(value: object) -> tuple:
    """Defaults (missing fields) first, numbers by magnitude, sequences element by element, anything
    else by its text."""
    if value is MISSING or value is None:
        return (0,)
    if isinstance(value, bool | int | float):
        return (1, float(value))
    if isinstance(value, tuple | list):
        return (2, tuple(order_key(v) for v in value))
    return (3, str(value))


def name_configs(specs: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Names of the configurations of one sweep: ``{config_id: name}`` in the one order they are
    listed in everywhere.

    ``specs`` maps each ``config_id`` to its flattened training spec without the seed
    (:func:`flat_training_spec`). A name is the distinguishing fields and values, then the
    id's first 8 characters: ``lr 0.1, widths 256-128 · 13e20844``.
    """
    fields = distinguishing_fields(specs.values()) or [
        name for name in ONE_CONFIG_FIELDS if any(name in spec for spec in specs.values())
    ]

    def order(config_id: str) -> tuple:
        spec = specs[config_id]
        return (tuple(order_key(spec.get(name, MISSING)) for name in fields), config_id)

    names = {}
    for config_id in sorted(specs, key=order):
        described = describe_fields(specs[config_id], fields) or "configuration"
        names[config_id] = f"{described} · {config_id[:HASH_CHARS]}"
    return names


def describe_fields(spec: Mapping[str, object], fields: Sequence[str]) -> str:
    """``fields`` of a flattened spec as a name writes them: ``lr 0.1, widths 256-128`` (empty for
    no fields)."""
    return ", ".join(_part(name, spec.get(name, MISSING)) for name in fields)


def configuration_labels(specs: Iterable[TrialSpec]) -> dict[str, str]:
    """:func:`name_configs` of the configurations of ``specs`` (the networks of one sweep; seeds of
    one configuration count once): ``{config_id: name}`` in the one order names are listed in."""
    flats: dict[str, dict[str, object]] = {}
    for spec in specs:
        if spec.config_id not in flats:
            flats[spec.config_id] = flat_training_spec(spec.to_dict())
    return name_configs(flats)


ROW_SPEC_COLUMNS = ("dataset", "model", "widths", "epochs", "batch_size", "optimizer", "lr")
"""Trial-row columns that stand in for a training spec when a row has no ``spec_json``."""
TRIAL_COLUMNS = ("sweep", "config_id", "spec_json", *ROW_SPEC_COLUMNS)
"""The trial-row columns :func:`names_of_trials` reads."""


def row_training_spec(row: Mapping[str, object]) -> dict[str, object]:
    """The flattened training spec (without seed) of a trial row: from its ``spec_json`` (a
    version-1 spec's measurement fields dropped), else from its own columns."""
    spec_json = row.get("spec_json")
    if spec_json:
        spec = json.loads(str(spec_json))
        return flat_training_spec({k: v for k, v in spec.items() if k not in V1_MEASUREMENT_FIELDS})
    renamed = {"optimizer": "optimizer.name", "lr": "optimizer.lr"}
    return {
        renamed.get(column, column): tuple(value) if isinstance(value, list) else value
        for column in ROW_SPEC_COLUMNS
        if (value := row.get(column)) is not None
    }


def names_of_trials(rows: Sequence[Mapping[str, object]]) -> dict[tuple[str, str], str]:
    """``{(sweep, config_id): name}`` for trial rows (``sweep``, ``config_id`` set, and
    ``spec_json`` or the spec columns), sweeps by name and each sweep's configurations in
    :func:`name_configs`'s order."""
    per_sweep: dict[str, dict[str, dict[str, object]]] = {}
    for row in rows:
        configs = per_sweep.setdefault(str(row["sweep"]), {})
        config_id = str(row["config_id"])
        if config_id not in configs:
            configs[config_id] = row_training_spec(row)
    return {
        (sweep, config_id): name
        for sweep in sorted(per_sweep)
        for config_id, name in name_configs(per_sweep[sweep]).items()
    }
