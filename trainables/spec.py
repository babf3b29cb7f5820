"""The training spec: every field that determines a network's weights, and nothing else.

``spec.json`` is the canonical JSON of a spec (sorted keys, separators ``,``
and ``:``, no whitespace, UTF-8) and the trial id is the first 16 hex
characters of its sha256, so the same spec always maps to the same id and a
re-run sweep skips it. What is *measured* on a network (swap kinds, draws,
alphas) is not part of its spec: see :mod:`trainables.plan`.

Each spec dataclass names in ``ALWAYS_WRITTEN`` the fields of store version 2;
those are always in spec.json. A field added later must have a default and is
written only when it differs from that default (as open_lth does), at every
level of nesting (a field added to :class:`OptimizerSpec` too), so the ids of
networks trained before it existed never change. Everything here (the
canonical form, reading a spec back, the configuration of a spec) is derived
from the dataclass fields: a new field needs no code beyond its declaration.

``config_id`` is the same hash without ``seed``: the seeds of one
configuration are the replicates that statistics pool, and the networks that
may be trained together in one pack.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

V1_MEASUREMENT_FIELDS = ("swaps", "rerandomize_draws")
"""Keys that version-1 spec.json files held; they never were training fields."""


@dataclass(frozen=True)
class OptimizerSpec:
    """``nesterov``: Nesterov momentum (SGD with momentum > 0 only)."""

    name: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    ALWAYS_WRITTEN: ClassVar[frozenset[str]] = frozenset({"name", "lr", "momentum", "weight_decay"})


@dataclass(frozen=True)
class ScheduleSpec:
    """The learning rate over training, as a factor of ``optimizer.lr``, stepped per optimizer step.

    ``constant``: 1. ``step``: multiplied by ``gamma`` at each epoch of
    ``milestones`` (MultiStepLR). ``cosine``: from 1 to 0 along a half cosine
    over the steps after the warmup (CosineAnnealingLR). ``warmup_epochs``:
    first a linear rise from 0 over that many epochs.
    """

    name: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float | None = None
    """The step schedule's factor (the config's default for ``step`` is 0.1); None otherwise."""
    warmup_epochs: int = 0

    ALWAYS_WRITTEN: ClassVar[frozenset[str]] = frozenset({"name"})


class FactoryKwargs(Mapping[str, Any]):
    """The keyword arguments of a ``custom`` model's factory: a read-only mapping of JSON values,
    hashable (by its canonical JSON) so that specs stay hashable."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = copy.deepcopy(dict(values or {}))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(canonical_bytes(self._values))

    def __repr__(self) -> str:
        return f"FactoryKwargs({self._values!r})"


@dataclass(frozen=True)
class TrialSpec:
    """One network: dataset (and its normalisation), architecture, seed, training.

    ``data_mean``/``data_std`` are the normalisation applied after scaling
    pixels to [0, 1]: a number, or one per channel. ``checkpoints`` are sorted
    epochs, always containing 0 and ``epochs``. ``precision`` is the training
    arithmetic (fp32, tf32, bf16). Fields of v3 (DESIGN.md, "Identity"):
    ``norm`` (``batch``: BatchNorm after every conv), ``augment``
    (``flip-crop``), ``schedule``, and for ``model: custom`` the ``factory``
    (``package.module:callable``) with its ``factory_kwargs``.
    """

    dataset: str
    data_mean: float | tuple[float, ...]
    data_std: float | tuple[float, ...]
    model: str
    widths: tuple[int, ...]
    seed: int
    epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    checkpoints: tuple[int, ...]
    precision: str = "fp32"
    norm: str = "none"
    augment: str = "none"
    schedule: ScheduleSpec = ScheduleSpec()
    factory: str | None = None
    factory_kwargs: FactoryKwargs = FactoryKwargs()

    ALWAYS_WRITTEN: ClassVar[frozenset[str]] = frozenset(
        {"dataset", "data_mean", "data_std", "model", "widths", "seed", "epochs", "batch_size",
         "optimizer", "checkpoints", "precision"}
    )
    """The training spec of store version 2: these keys are always in spec.json."""

    def canonical_fields(self) -> dict[str, Any]:
        """The fields spec.json holds: ``ALWAYS_WRITTEN``, plus later fields off their default."""
        return canonical_fields(self)

    def canonical_json(self) -> bytes:
        return canonical_bytes(self.canonical_fields())

    @functools.cached_property  # hashing the canonical JSON costs ~2 ms; a trial asks a dozen times
    def trial_id(self) -> str:
        return short_hash(self.canonical_json())

    @functools.cached_property
    def config_id(self) -> str:
        """The hash of the training spec without ``seed``: one per configuration."""
        fields = self.canonical_fields()
        del fields["seed"]
        return short_hash(canonical_bytes(fields))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """A spec from its spec.json dict; a version-1 dict's measurement keys are dropped."""
        training = {key: value for key, value in data.items() if key not in V1_MEASUREMENT_FIELDS}
        return from_plain(cls, training)


def canonical_fields(spec: Any) -> dict[str, Any]:
    """A spec dataclass as plain JSON values: ``ALWAYS_WRITTEN`` fields, and the others only
    where they differ from their default; nested spec dataclasses by the same rule."""
    always = getattr(spec, "ALWAYS_WRITTEN", frozenset())
    out: dict[str, Any] = {}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.name not in always and value == _default(field):
            continue
        out[field.name] = _plain(value)
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return canonical_fields(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def from_plain(cls: type, data: dict[str, Any]) -> Any:
    """The spec dataclass ``cls`` from plain JSON values (the inverse of :func:`canonical_fields`):
    nested dataclasses and tuples rebuilt from the field types; absent fields take their default."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            values[field.name] = _typed(hints[field.name], data[field.name])
    return cls(**values)


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for candidate in typing.get_args(hint) if union else (hint,):  # X | None: the first that fits
        if dataclasses.is_dataclass(candidate) and isinstance(value, dict):
            return from_plain(candidate, value)
        if isinstance(candidate, type) and issubclass(candidate, Mapping) and isinstance(value, dict):
            return candidate(value)
        if typing.get_origin(candidate) is tuple and isinstance(value, list | tuple):
            args = typing.get_args(candidate)
            item = args[0] if args else Any
            return tuple(_typed(item, element) for element in value)
    return value


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


def training_fields() -> tuple[str, ...]:
    """The training-spec fields a sweep config sets for all its networks: every field of
    :class:`TrialSpec` but ``seed`` and ``widths`` (the grid's own axes) and the data
    normalisation (derived from ``dataset``)."""
    derived = {"seed", "widths", "data_mean", "data_std"}
    return tuple(f.name for f in dataclasses.fields(TrialSpec) if f.name not in derived)


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that ids are hashes of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def short_hash(data: bytes) -> str:
    """The first 16 hex characters of the sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]
