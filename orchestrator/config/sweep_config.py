"""Sweep config: YAML in, a validated frozen SweepConfig out.

Every value is checked before anything runs; a bad value raises ConfigError
with one line naming the field, the value (shortened to a few dozen
characters) and what is allowed. Integers are bounded by the Arrow column that
stores them, and the grid by :data:`MAX_NETWORKS`, before it is expanded.

This module imports nothing heavy (no torch, Ray or pyarrow): a refused
config costs a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.blocks import (
    Resources,
    WandbConfig,
    parse_alphas,
    parse_checkpoints,
    parse_criticality,
    parse_factory,
    parse_groups,
    parse_name,
    parse_optimizer,
    parse_pack,
    parse_resources,
    parse_schedule,
    parse_seeds,
    parse_swaps,
    parse_wandb,
    parse_widths,
)
from orchestrator.config.grid_axes import Grid, parse_grid, remove_keys, substitute
from orchestrator.config.values import ConfigError, choice, echo, fail, integer, number
from orchestrator.config.yaml_loader import YamlRefused, load_yaml
from trainables.choices import AUGMENTS, DATASETS, MODELS, PRECISIONS
from trainables.data.catalog import CATALOG
from trainables.models.architectures import ARCHITECTURES, NORMS, check_architecture
from trainables.plan import DEFAULT_ALPHAS, DEFAULT_GROUPS, CriticalitySettings, MeasurementPlan
from trainables.spec import FactoryKwargs, OptimizerSpec, ScheduleSpec, canonical_fields

MAX_RETRIES = 2
"""Times a trial (Tune) or a measurement task (Ray) is rerun after its worker died."""


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config. With a ``grid``, its training fields hold the values of the grid's
    first combination and :attr:`configurations` holds one grid-free config per combination: the
    networks are :func:`orchestrator.config.grid.expand_grid`'s, never these fields alone."""

    name: str
    dataset: str
    model: str
    widths: tuple[tuple[int, ...], ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    checkpoints: tuple[int, ...]
    swaps: tuple[str, ...]
    store: str
    rerandomize_draws: int = 1
    resources: Resources = Resources()
    precision: str = "fp32"
    max_concurrent_trials: int = 0
    """0 = as many as the cluster's resources allow."""
    wandb: WandbConfig | None = None
    """None = no W&B logging."""
    pack: int = 0
    """Networks (seeds of one width config) trained together per trial; 0 = auto."""
    checkpoint_seconds: float = 60.0
    """At most this long between checkpoints of a training pack (a retry redoes at most this much)."""
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    """The ``interpolate`` grid (fractions of the way from init to trained)."""
    criticality: CriticalitySettings | None = None
    """Module criticality settings; None = not measured."""
    norm: str = "none"
    """``batch``: BatchNorm after every conv (the conv families' default when the config names none)."""
    augment: str = "none"
    schedule: ScheduleSpec = ScheduleSpec()
    factory: str | None = None
    """``model: custom``: ``package.module:callable``."""
    factory_kwargs: FactoryKwargs = FactoryKwargs()
    recalibrate: int = 0
    """Training samples that re-estimate every BatchNorm's statistics of each swapped network for a
    second measurement of it; 0 = none (a measurement setting, not part of any network's identity)."""
    groups: tuple[str, ...] = DEFAULT_GROUPS
    """Levels measured: ``layer`` (always), and ``block``/``stage`` for groups of layers swapped
    together (a measurement setting; a group of one layer is measured once, as its layer)."""
    grid: Grid = Grid()
    """More axes over training-spec fields (:mod:`orchestrator.config.grid_axes`); empty = none."""

    @functools.cached_property
    def configurations(self) -> tuple[SweepConfig, ...]:
        """One config without a grid per combination of the grid's values, the first axis varying
        slowest (all validated when this config was parsed); this config alone without a grid."""
        if not self.grid.axes:
            return (self,)
        base = {key: value for key, value in self.to_raw().items() if key != "grid"}
        return tuple(parse_config(substitute(base, values)) for values in self.grid.combinations())

    @property
    def plan(self) -> MeasurementPlan:
        """What the sweep measures on every network (not part of any network's identity)."""
        return MeasurementPlan(self.swaps, self.rerandomize_draws, self.alphas, self.criticality,
                               self.recalibrate, self.groups)

    def with_overrides(
        self,
        store: str | None = None,
        seeds: int | None = None,
        epochs: int | None = None,
        wandb_project: str | None = None,
    ) -> SweepConfig:
        """The config with command-line overrides applied and re-validated."""
        raw = self.to_raw()
        if wandb_project is not None:
            raw["wandb"] = {**(raw["wandb"] or {}), "project": wandb_project}
        if store is not None:
            raw["store"] = store
        if seeds is not None:
            raw["seeds"] = seeds
        if epochs is not None:
            raw["epochs"] = epochs
            if "checkpoints" not in self.grid.keys:
                raw["checkpoints"] = [c for c in self.checkpoints if c <= epochs]
        return parse_config(raw)

    def to_raw(self) -> dict[str, Any]:
        """The config as plain YAML/JSON values (round-trips through parse_config), derived from
        the fields: those of :data:`RECORD_V2_KEYS` always, any other only off its default, so
        that the records of existing sweeps (named by the hash of this) keep their names. With a
        grid, its keys are left out of the top level (they hold the first combination's values)."""
        raw: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in RECORD_V2_KEYS or value != field.default:
                raw[field.name] = raw_value(value)
        raw["pack"] = self.pack or "auto"
        return remove_keys(raw, self.grid.keys) if self.grid.axes else raw


def raw_value(value: Any) -> Any:
    """A config value as plain YAML/JSON: a block by its own ``to_raw``/``to_dict``, a training-spec
    block by the spec's canonical rule, tuples as lists."""
    if hasattr(value, "to_raw"):
        return value.to_raw()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, OptimizerSpec | ScheduleSpec):
        return canonical_fields(value)
    if isinstance(value, FactoryKwargs):
        return dict(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, tuple | list):
        return [raw_value(item) for item in value]
    return value


TOP_LEVEL_KEYS = tuple(field.name for field in dataclasses.fields(SweepConfig))
"""The keys a config may hold: one per SweepConfig field."""
RECORD_V2_KEYS = frozenset(TOP_LEVEL_KEYS) - {
    "checkpoint_seconds", "grid", "norm", "augment", "schedule", "factory", "factory_kwargs", "recalibrate",
    "groups",
}
"""The keys every sweep record written by store version 2 holds."""

MAX_CONFIG_BYTES = 2**20
"""A config is read only up to this size (1 MiB); a sweep config is a few hundred bytes."""


def read_config_bytes(path: Path) -> bytes:
    """The config file's bytes, read no further than MAX_CONFIG_BYTES + 1 (so a stream such as
    /dev/zero is refused at once); ConfigError (one line) if it cannot be read, is larger or is empty."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"config: cannot read {str(path)!r} ({err.strerror or err})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config: {str(path)!r} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; a sweep config is a few "
            "hundred bytes of YAML (is it the right file?)"
        )
    if not data.strip():
        raise ConfigError(
            f"config: {str(path)!r} is empty; write the sweep's fields in it (see configs/demo.yaml)"
        )
    return data


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate the sweep config at ``path`` (see :mod:`orchestrator.config.yaml_loader`)."""
    path = Path(path)
    data = read_config_bytes(path)
    try:
        raw = load_yaml(data)
    except YamlRefused as err:
        raise ConfigError(f"config: {str(path)!r} {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"config: {str(path)!r} is not valid YAML{line}: {problem}") from None
    if raw is None:
        raise ConfigError(f"config: {str(path)!r} is empty (only comments or blank lines); write the sweep's "
                          "fields in it (see configs/demo.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {str(path)!r} must be a YAML mapping of fields, got {echo(raw)}")
    return parse_config(raw)


def parse_config(raw: dict[str, Any]) -> SweepConfig:
    """The validated config of ``raw`` (plain YAML values); ConfigError (one line) for a bad value."""
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise fail(unknown[0], raw[unknown[0]], f"unknown field; fields: {', '.join(TOP_LEVEL_KEYS)}")
    if raw.get("grid") is None:
        return parse_fields({key: value for key, value in raw.items() if key != "grid"})
    grid, first = parse_grid(raw, parse_fields, TOP_LEVEL_KEYS)
    return dataclasses.replace(first, grid=grid)


def parse_fields(raw: dict[str, Any]) -> SweepConfig:
    """The config of ``raw`` without a grid (``raw`` holds no ``grid`` key)."""
    name = parse_name(raw.get("name"))
    epochs = integer(raw, "epochs", 1)
    store = raw.get("store", f"./runs/{name}")
    if not isinstance(store, str) or not store.strip():
        raise fail("store", store, "expected a path or URI")
    dataset = choice(raw, "dataset", DATASETS)
    model = choice(raw, "model", MODELS, "mlp")
    widths = parse_widths(raw["widths"]) if "widths" in raw else (ARCHITECTURES[model].default_widths,)
    norm = choice(raw, "norm", NORMS, ARCHITECTURES[model].default_norm)
    for width in widths:
        try:
            check_architecture(model, width, norm, dataset, CATALOG[dataset].input_shape)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    augment = choice(raw, "augment", AUGMENTS, "none")
    if augment != "none" and not CATALOG[dataset].is_image:
        raise fail("augment", augment, f"dataset {dataset} has no images to flip and crop; use none")
    factory, factory_kwargs = parse_factory(raw.get("factory"), raw.get("factory_kwargs"), model)
    return SweepConfig(
        name=name,
        dataset=dataset,
        model=model,
        widths=widths,
        seeds=parse_seeds(raw.get("seeds"), len(widths)),
        epochs=epochs,
        batch_size=integer(raw, "batch_size", 1),
        optimizer=parse_optimizer(raw.get("optimizer")),
        checkpoints=parse_checkpoints(raw.get("checkpoints"), epochs),
        swaps=parse_swaps(raw.get("swaps")),
        store=store,
        rerandomize_draws=integer(raw, "rerandomize_draws", 1, default=1),
        resources=parse_resources(raw.get("resources")),
        precision=choice(raw, "precision", PRECISIONS, "fp32"),
        max_concurrent_trials=integer(raw, "max_concurrent_trials", 0, default=0),
        wandb=parse_wandb(raw.get("wandb")),
        pack=parse_pack(raw.get("pack")),
        checkpoint_seconds=number(raw, "checkpoint_seconds", 60.0, positive=False),
        alphas=parse_alphas(raw.get("alphas")),
        criticality=parse_criticality(raw.get("criticality")),
        norm=norm,
        augment=augment,
        schedule=parse_schedule(raw.get("schedule"), epochs),
        factory=factory,
        factory_kwargs=factory_kwargs,
        recalibrate=integer(raw, "recalibrate", 0, default=0),
        groups=parse_groups(raw.get("groups")),
    )
