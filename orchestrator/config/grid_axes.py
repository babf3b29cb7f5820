"""The config's ``grid:`` block: more axes over training-spec fields, validated before anything is expanded.

A grid key is a training-spec field (:func:`grid_keys`, derived from the dataclass fields of
:class:`trainables.spec.TrialSpec` and of its nested spec blocks, so a field added to the spec is
a grid key with no code here); a field inside a block is dotted (``optimizer.lr``), and a whole
block is a key too (``optimizer``). Each value is validated as the scalar field would be: it is
put into the config in place of that field and the config is parsed. The networks of a sweep are
the product of every axis, ``widths`` and ``seeds`` (:func:`orchestrator.config.grid.expand_grid`).

Refused with one line (:class:`ConfigError`), in this order and before any combination is
expanded: a grid that is not a mapping, a key that is no training field (the closest known one
named), a measurement setting or run setting used as an axis, a key given both at the top level
and in the grid (or twice in it), an empty axis, a product over :data:`MAX_NETWORKS`; then, each
value on its own, a bad value and repeated values (``0.1`` and ``0.10`` are one value); last, each
combination of values, one that does not fit (named by the axis values it needs).

Imports nothing heavy: a refused grid costs what a refused config does.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.config.blocks import MAX_NETWORKS, parse_widths
from orchestrator.config.values import ConfigError, echo, fail
from trainables.plan import MeasurementPlan
from trainables.spec import TrialSpec, training_fields

AXES_OF_EVERY_SWEEP = ("widths", "seeds", "seed")
"""Keys that are already the sweep's own axes."""
DERIVED_FIELDS = ("data_mean", "data_std")
"""Training-spec fields that follow from another (the dataset's normalisation)."""


def _block(hint: Any) -> type | None:
    """The spec dataclass of a field's type hint (``X`` or ``X | None``), else None."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for candidate in typing.get_args(hint) if union else (hint,):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def grid_keys() -> tuple[str, ...]:
    """Every key a grid may hold, in the spec's field order: each training field of
    :class:`TrialSpec` (:func:`training_fields`) and, for a field that is a block of its own
    (``optimizer``), each of the block's fields dotted (``optimizer.lr``), recursively."""
    keys: list[str] = []

    def visit(cls: type, names: tuple[str, ...], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for name in names:
            keys.append(prefix + name)
            block = _block(hints[name])
            if block is not None:
                visit(block, tuple(f.name for f in dataclasses.fields(block)), f"{prefix}{name}.")

    visit(TrialSpec, training_fields(), "")
    return tuple(keys)


def measurement_settings() -> frozenset[str]:
    """Config keys that say what is measured on a network, not what it is (the fields of
    :class:`MeasurementPlan`): never a grid axis."""
    return frozenset(field.name for field in dataclasses.fields(MeasurementPlan))


def _value_key(value: Any) -> Any:
    """A raw YAML value as a hashable, comparable form (lists as tuples, mappings as sorted items)."""
    if isinstance(value, dict):
        return ("mapping", tuple(sorted((str(k), _value_key(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return tuple(_value_key(v) for v in value)
    return value


@dataclass(frozen=True)
class GridAxis:
    """One axis: a grid key and its values as the config gave them (plain YAML values)."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Grid:
    """The config's ``grid:`` axes, in the config's order; empty = a sweep over widths and seeds only."""

    axes: tuple[GridAxis, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(axis.key for axis in self.axes)

    @property
    def size(self) -> int:
        """Combinations of values (1 for an empty grid)."""
        return math.prod(len(axis.values) for axis in self.axes)

    def combinations(self) -> Iterator[dict[str, Any]]:
        """Each combination as ``{key: value}``, the first axis varying slowest."""
        for values in itertools.product(*(axis.values for axis in self.axes)):
            yield dict(zip(self.keys, values, strict=True))

    def to_raw(self) -> dict[str, list[Any]]:
        return {axis.key: copy.deepcopy(list(axis.values)) for axis in self.axes}

    def __hash__(self) -> int:
        return hash(tuple((axis.key, _value_key(list(axis.values))) for axis in self.axes))


def substitute(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (not changed) with each dotted key of ``values`` set to its value, blocks copied."""
    out = copy.copy(raw)
    for key, value in values.items():
        *blocks, name = key.split(".")
        target = out
        for block in blocks:
            inner = target.get(block)
            target[block] = dict(inner) if isinstance(inner, dict) else {}
            target = target[block]
        target[name] = copy.deepcopy(value)
    return out


def remove_keys(raw: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``raw`` (not changed) without the dotted ``keys`` (the inverse of :func:`substitute`)."""
    out = copy.deepcopy(raw)
    for key in keys:
        *blocks, name = key.split(".")
        target = out
        for block in blocks:
            target = target.get(block) if isinstance(target.get(block), dict) else {}
        target.pop(name, None)
    return out


def _at(raw: dict[str, Any], key: str) -> bool:
    """Whether the dotted ``key`` is set in ``raw``."""
    *blocks, name = key.split(".")
    target: Any = raw
    for block in blocks:
        target = target.get(block) if isinstance(target, dict) else None
    return isinstance(target, dict) and name in target


def _unknown_key(key: Any, keys: tuple[str, ...], top_level: tuple[str, ...]) -> ConfigError:
    text = str(key)
    root = text.split(".", 1)[0]
    if text in AXES_OF_EVERY_SWEEP:
        return ConfigError(f"grid: {text!r} is already an axis of every sweep; list its values in "
                           f"the config's {'seeds' if text == 'seed' else text!r}")
    if text in DERIVED_FIELDS:
        return ConfigError(f"grid: {text!r} follows from the dataset; make 'dataset' an axis instead")
    if root in measurement_settings():
        return ConfigError(
            f"grid: {text!r} is a measurement setting, not a training field: it says what is measured "
            "on every network, not what a network is; set it once at the top level (all of its values "
            "are measured on every network)"
        )
    if root in top_level and root not in keys:
        return ConfigError(f"grid: {text!r} is a run setting, not a training field; set it once at "
                           "the top level")
    close = [known for known in keys if known.endswith(f".{text}")] or difflib.get_close_matches(
        text, keys, n=1, cutoff=0.6
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"grid: {echo(key)} is not a training-spec field{hint} (grid keys: {', '.join(keys)})")


def read_axes(raw: dict[str, Any], top_level: tuple[str, ...]) -> Grid:
    """The axes of ``raw["grid"]``, their keys and sizes checked (nothing parsed or expanded yet)."""
    value = raw["grid"]
    if not isinstance(value, dict) or not value:
        raise fail("grid", value, "expected a mapping of training-spec fields to lists of values, "
                   "e.g. {optimizer.lr: [0.1, 0.01]}")
    keys = grid_keys()
    for key in value:
        if key not in keys:
            raise _unknown_key(key, keys, top_level)
    axes = []
    for key, values in value.items():
        if _at(raw, key):
            raise ConfigError(f"grid: {key!r} is given both at the top level and in grid; keep one")
        inside = next((other for other in value if key.startswith(f"{other}.")), None)
        if inside is not None:
            raise ConfigError(f"grid: {key!r} is given twice (inside the {inside!r} axis too); keep one")
        if not isinstance(values, list) or not values:
            raise fail(f"grid.{key}", values, "expected a non-empty list of values, one per configuration")
        axes.append(GridAxis(key, tuple(values)))
    return Grid(tuple(axes))


def _count(raw: dict[str, Any], field: str) -> int | None:
    """How many width configs or seeds ``raw`` names (None when it is not valid: parsing says why)."""
    value = raw.get(field)
    if field == "seeds":
        if isinstance(value, int) and not isinstance(value, bool):
            return max(value, 0)
        return len(value) if isinstance(value, list) else None
    try:
        return len(parse_widths(value))
    except ConfigError:
        return None


def check_size(grid: Grid, raw: dict[str, Any]) -> None:
    """Refuse a grid whose networks (axes x width configs x seeds) exceed :data:`MAX_NETWORKS`."""
    widths, seeds = _count(raw, "widths"), _count(raw, "seeds")
    total = grid.size * (widths or 1) * (seeds or 1)
    if total > MAX_NETWORKS:
        sizes = " x ".join(str(len(axis.values)) for axis in grid.axes)
        raise ConfigError(
            f"grid: {sizes} values x {widths or 1} width configs x {seeds or 1} seeds is {total} networks, "
            f"more than {MAX_NETWORKS} in one sweep; split it into several sweeps"
        )


def describe(values: dict[str, Any]) -> str:
    """Axis values as a reader names them: ``optimizer.name 'adam', optimizer.lr 0.1``."""
    return ", ".join(f"{key} {echo(value)}" for key, value in values.items())


def _fits(parse: Callable[[dict], Any], raw: dict[str, Any], values: dict[str, Any]) -> bool:
    try:
        parse(substitute(raw, values))
    except ConfigError:
        return False
    return True


def _refusal(
    parse: Callable[[dict], Any], raw: dict[str, Any], grid: Grid, values: dict[str, Any], err: ConfigError
) -> ConfigError:
    """The one line for combination ``values`` that ``parse`` refused with ``err``: the value's own
    error when changing that one axis alone fixes it and the error is about that field; else the
    axis values it needs, named; else (no axis value matters) ``err`` itself."""
    needed = [
        axis.key for axis in grid.axes
        if any(_fits(parse, raw, {**values, axis.key: other}) for other in axis.values
               if other != values[axis.key])
    ]
    message = str(err)
    if not needed:  # no other value of any axis helps: the value itself, or the rest of the config
        own = any(message.startswith((f"{key}:", f"{key}.")) for key in values)
        return ConfigError(f"grid: {message}") if own else err
    if len(needed) == 1 and message.startswith((f"{needed[0]}:", f"{needed[0]}.")):
        return ConfigError(f"grid: {message}")
    named = {key: values[key] for key in needed}
    return ConfigError(f"grid: the combination {describe(named)} does not fit: {message}")


def field_value(config: Any, key: str) -> Any:
    """The parsed value of dotted ``key`` in a parsed config (``optimizer.lr`` -> ``config.optimizer.lr``)."""
    for name in key.split("."):
        config = getattr(config, name)
    return config


def parse_grid(
    raw: dict[str, Any], parse: Callable[[dict], Any], top_level: tuple[str, ...]
) -> tuple[Grid, Any]:
    """The grid of ``raw`` and the config of its first combination, every value and every
    combination checked; ``parse`` parses a config without a grid (raising ConfigError)."""
    grid = read_axes(raw, top_level)
    check_size(grid, raw)
    base = {key: value for key, value in raw.items() if key != "grid"}
    first = {axis.key: axis.values[0] for axis in grid.axes}
    for axis in grid.axes:
        seen: dict[Any, Any] = {}
        for value in axis.values:
            values = {**first, axis.key: value}
            try:
                config = parse(substitute(base, values))
            except ConfigError as err:
                raise _refusal(parse, base, grid, values, err) from None
            parsed = field_value(config, axis.key)
            try:
                repeated = seen.get(parsed, _NOT_SEEN)
            except TypeError:  # an unhashable parsed value: compare by its plain form
                parsed = _value_key(parsed)
                repeated = seen.get(parsed, _NOT_SEEN)
            if repeated is not _NOT_SEEN:
                raise fail(f"grid.{axis.key}", list(axis.values),
                           f"each value may appear once ({echo(repeated)} and {echo(value)} are one value)")
            seen[parsed] = value
    configs = []
    for values in grid.combinations():
        try:
            configs.append(parse(substitute(base, values)))
        except ConfigError as err:
            raise _refusal(parse, base, grid, values, err) from None
    return grid, configs[0]


_NOT_SEEN = object()
