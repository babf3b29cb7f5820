"""Naming configurations by what distinguishes them: ``lr 0.1, widths 256-128``, not a hash alone.

A configuration is a training spec without its seed (DESIGN.md, "Identity"). Among the
configurations of one sweep, each is named by the fields whose values are not the same in all of
them, read from the specs' dataclass fields (nested blocks dotted, defaults included, so a field
added to the spec later takes part with no code here), then by its ``widths`` (the sweep's own
axis, always named). A field that follows from another one that also differs (``data_mean`` from
``dataset``, ``checkpoints`` from ``epochs``) is left out. One configuration alone is named by its
widths.

The report and ``ls`` name configurations the same way (issue 18's naming); this is the driver's
copy for the pack plan, to become one function with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from trainables.spec import TrialSpec

FOLLOWS_FROM = {"data_mean": "dataset", "data_std": "dataset", "checkpoints": "epochs"}
"""A field left out of a name when the field it follows from distinguishes the configuration too."""
LAST = "widths"
"""The sweep's own axis: in every label, after the fields that distinguish the configuration."""


def flat_fields(spec: Any, prefix: str = "") -> dict[str, Any]:
    """A spec dataclass's fields by dotted name (``optimizer.lr``), nested blocks flattened, defaults
    included, ``seed`` left out; lists and tuples as tuples."""
    flat: dict[str, Any] = {}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        name = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            flat.update(flat_fields(value, f"{name}."))
        elif name != "seed":
            flat[name] = tuple(value) if isinstance(value, list | tuple) else value
    return flat


def format_value(value: Any) -> str:
    """``(256, 128)`` -> ``256-128``, ``0.1`` -> ``0.1``, ``True`` -> ``on``, ``None`` -> ``none``."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return "-".join(format_value(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def short_name(field: str) -> str:
    """How a field is written in a label: its last dotted part (``optimizer.lr`` -> ``lr``), or its
    block for a block's ``name`` (``optimizer.name`` -> ``optimizer``)."""
    *blocks, last = field.split(".")
    return blocks[-1] if blocks and last == "name" else last


def distinguishing_fields(flats: list[dict[str, Any]]) -> list[str]:
    """The fields whose values differ among ``flats``, in field order, then ``widths``."""
    names = list(dict.fromkeys(name for flat in flats for name in flat))
    differing = [name for name in names if len({repr(flat.get(name)) for flat in flats}) > 1]
    kept = [name for name in differing if FOLLOWS_FROM.get(name) not in differing and name != LAST]
    return [*kept, LAST]


def configuration_labels(specs: Iterable[TrialSpec]) -> dict[str, str]:
    """``{config_id: label}`` for the configurations of ``specs`` (seeds of one configuration count
    once), in order of first appearance: ``lr 0.1, widths 256-128``."""
    flats: dict[str, dict[str, Any]] = {}
    for spec in specs:
        flats.setdefault(spec.config_id, flat_fields(spec))
    fields = distinguishing_fields(list(flats.values()))
    return {
        config_id: ", ".join(f"{short_name(name)} {format_value(flat.get(name))}" for name in fields)
        for config_id, flat in flats.items()
    }
