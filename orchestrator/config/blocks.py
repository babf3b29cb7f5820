"""Parsing and validating the blocks of a sweep config: widths, seeds, optimizer, schedule, factory,
checkpoints, swaps, resources, wandb, pack, name, alphas and criticality. Each returns a frozen value
or raises ConfigError naming the field."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.config.values import (
    INT32_MAX,
    INT64_MAX,
    choice,
    fail,
    integer,
    number,
)
from trainables.choices import SCHEDULES, WANDB_MODES
from trainables.plan import (
    BISECT_ONLY,
    CRITICALITY_SEARCHES,
    DEFAULT_ALPHAS,
    DEFAULT_GROUPS,
    GRID_ONLY,
    GROUP_LEVELS,
    SWAP_KINDS,
    CriticalitySettings,
    alpha_key,
    implied_search,
    ordered_groups,
)
from trainables.spec import FactoryKwargs, OptimizerSpec, ScheduleSpec

OPTIMIZERS = ("sgd", "adam")
MAX_NETWORKS = 1_000_000
"""Networks (width configs x seeds) one sweep may hold."""
MAX_NAME_BYTES = 100
"""A sweep name is a directory name (``sweeps/<name>/``) and part of Tune's experiment name."""


@dataclass(frozen=True)
class Resources:
    """Ray resources per trial: CPUs (>0) and a GPU fraction (0 = CPU only)."""

    cpu_per_trial: float = 1.0
    gpu_per_trial: float = 0.0


@dataclass(frozen=True)
class WandbConfig:
    """The config's ``wandb:`` block (and ``--wandb``): None = not set here.

    What is not set comes from W&B's environment variables when the sweep
    starts (``orchestrator.wandb.settings.resolve_wandb``).
    """

    project: str | None = None
    mode: str | None = None
    entity: str | None = None
    dir: str | None = None
    tags: tuple[str, ...] | None = None
    init_timeout_seconds: float | None = None
    """Seconds W&B may take to start a run (default 60)."""

    def to_raw(self) -> dict[str, Any]:
        raw = {key: value for key, value in asdict(self).items() if value is not None}
        return {**raw, "tags": list(self.tags)} if self.tags is not None else raw



def parse_widths(value: Any) -> tuple[tuple[int, ...], ...]:
    allowed = f"expected a non-empty list of width lists of integers in [1, {INT32_MAX}], e.g. [[256, 128]]"
    if isinstance(value, list) and value and all(isinstance(w, int) for w in value):
        value = [value]  # a single width config written flat
    if not isinstance(value, list) or not value:
        raise fail("widths", value, allowed)
    configs = []
    for config in value:
        if (
            not isinstance(config, list)
            or not config
            or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= INT32_MAX for w in config)
        ):
            raise fail("widths", config, allowed)
        configs.append(tuple(config))
    if len(set(configs)) != len(configs):
        raise fail("widths", value, "each width config may appear once")
    return tuple(configs)


def parse_seeds(value: Any, width_configs: int) -> tuple[int, ...]:
    """The seeds, refused before they are expanded when the grid would exceed MAX_NETWORKS."""
    allowed = (
        f"expected an integer n in [1, {MAX_NETWORKS}] (seeds 0..n-1) or a list of distinct "
        f"integers in [0, {INT64_MAX}]"
    )
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, list):
        count = len(value)
    if count is not None and count * width_configs > MAX_NETWORKS:
        raise fail(
            "seeds", value, f"{count} seeds x {width_configs} width configs is more than "
            f"{MAX_NETWORKS} networks in one sweep; split it into several sweeps"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise fail("seeds", value, allowed)
        return tuple(range(value))
    if not isinstance(value, list) or not value:
        raise fail("seeds", value, allowed)
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= INT64_MAX:
            raise fail("seeds", seed, allowed)
    if len(set(value)) != len(value):
        raise fail("seeds", value, "each seed may appear once")
    return tuple(value)


def parse_optimizer(value: Any) -> OptimizerSpec:
    if not isinstance(value, dict):
        raise fail("optimizer", value, "expected a mapping like {name: sgd, lr: 0.01}")
    unknown = set(value) - {"name", "lr", "momentum", "weight_decay", "nesterov"}
    if unknown:
        raise fail("optimizer", sorted(unknown)[0], "keys: name, lr, momentum, weight_decay, nesterov")
    name = choice(value, "optimizer.name", OPTIMIZERS)
    momentum = number(value, "optimizer.momentum", 0.0, positive=False)
    if momentum >= 1:
        raise fail("optimizer.momentum", momentum, "expected a number in [0, 1)")
    if name == "adam" and momentum:
        raise fail("optimizer.momentum", momentum, "adam takes no momentum")
    nesterov = value.get("nesterov", False)
    if not isinstance(nesterov, bool):
        raise fail("optimizer.nesterov", nesterov, "expected true or false")
    if nesterov and (name != "sgd" or not momentum):
        raise fail("optimizer.nesterov", nesterov, "Nesterov momentum needs name: sgd and momentum > 0")
    return OptimizerSpec(
        name=name,
        lr=number(value, "optimizer.lr", None, positive=True),
        momentum=momentum,
        weight_decay=number(value, "optimizer.weight_decay", 0.0, positive=False),
        nesterov=nesterov,
    )


STEP_GAMMA = 0.1
"""The step schedule's factor when the config gives none."""


def parse_schedule(value: Any, epochs: int) -> ScheduleSpec:
    """``{name: constant|step|cosine, milestones: [epochs] (step), gamma: g (step), warmup_epochs: n}``."""
    allowed = ("expected {name: constant|step|cosine, milestones: [EPOCH, ...], gamma: G, warmup_epochs: N} "
               "(milestones and gamma for step only)")
    if value is None:
        return ScheduleSpec()
    if not isinstance(value, dict):
        raise fail("schedule", value, allowed)
    unknown = sorted(set(value) - {"name", "milestones", "gamma", "warmup_epochs"})
    if unknown:
        raise fail(f"schedule.{unknown[0]}", value[unknown[0]], allowed)
    name = value.get("name", "constant")
    if name not in SCHEDULES:
        raise fail("schedule.name", name, f"allowed: {', '.join(SCHEDULES)}")
    if name != "step" and ("milestones" in value or "gamma" in value):
        key = "milestones" if "milestones" in value else "gamma"
        raise fail(f"schedule.{key}", value[key], f"only the step schedule takes {key}")
    warmup = integer(value, "schedule.warmup_epochs", 0, default=0, maximum=epochs - 1)
    if name != "step":
        return ScheduleSpec(name, warmup_epochs=warmup)
    milestones = value.get("milestones")
    valid = f"expected a non-empty list of distinct epochs in [{warmup + 1}, {epochs}], after the warmup"
    if not isinstance(milestones, list) or not milestones or len(set(milestones)) != len(milestones):
        raise fail("schedule.milestones", milestones, valid)
    for epoch in milestones:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not warmup < epoch <= epochs:
            raise fail("schedule.milestones", epoch, valid)
    gamma = number(value, "schedule.gamma", STEP_GAMMA, positive=True)
    return ScheduleSpec(name, tuple(sorted(milestones)), gamma, warmup)


def parse_factory(factory: Any, kwargs: Any, model: str) -> tuple[str | None, FactoryKwargs]:
    """``factory`` (``package.module:callable``) and ``factory_kwargs`` (a mapping), for
    ``model: custom`` only; whether they can be imported and built is checked before Ray starts."""
    if model != "custom":
        if factory is not None or kwargs is not None:
            key, given = ("factory", factory) if factory is not None else ("factory_kwargs", kwargs)
            raise fail(key, given, "only model: custom takes a factory")
        return None, FactoryKwargs()
    if not isinstance(factory, str) or factory.count(":") != 1 or not all(factory.split(":")):
        raise fail("factory", factory, "model custom needs factory: 'package.module:callable'")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise fail("factory_kwargs", kwargs, "expected a mapping of keyword arguments for the factory")
    reserved = sorted({"input_shape", "n_classes", "widths"} & set(kwargs))
    if reserved:
        raise fail(f"factory_kwargs.{reserved[0]}", kwargs[reserved[0]],
                   "input_shape, n_classes and widths are passed by layerswap")
    return factory, FactoryKwargs(kwargs)


def parse_checkpoints(value: Any, epochs: int) -> tuple[int, ...]:
    allowed = f"expected a list of integers in [0, {epochs}] (epochs)"
    if value is None:
        value = []
    if not isinstance(value, list):
        raise fail("checkpoints", value, allowed)
    for epoch in value:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
            raise fail("checkpoints", epoch, allowed)
    return tuple(sorted({0, epochs, *value}))


def parse_swaps(value: Any) -> tuple[str, ...]:
    allowed = f"allowed: {', '.join(SWAP_KINDS)} (baselines 'none' are always measured)"
    if not isinstance(value, list) or not value:
        raise fail("swaps", value, allowed)
    for kind in value:
        if kind not in SWAP_KINDS:
            raise fail("swaps", kind, allowed)
    return tuple(kind for kind in SWAP_KINDS if kind in value)


def parse_groups(value: Any) -> tuple[str, ...]:
    """The ``groups`` levels, in the order of :data:`GROUP_LEVELS`, ``layer`` always among them."""
    allowed = f"expected a list of {', '.join(GROUP_LEVELS)} (single layers are always measured)"
    if value is None:
        return DEFAULT_GROUPS
    if not isinstance(value, list) or not value:
        raise fail("groups", value, allowed)
    for level in value:
        if level not in GROUP_LEVELS:
            raise fail("groups", level, allowed)
    return ordered_groups(value)


def parse_resources(value: Any) -> Resources:
    if value is None:
        return Resources()
    if not isinstance(value, dict) or set(value) - {"cpu_per_trial", "gpu_per_trial"}:
        raise fail("resources", value, "expected {cpu_per_trial: N, gpu_per_trial: F}")
    gpu = number(value, "resources.gpu_per_trial", 0.0, positive=False)
    if gpu > 1 and not gpu.is_integer():
        raise fail("resources.gpu_per_trial", gpu, "expected a fraction <= 1 or a whole number")
    return Resources(number(value, "resources.cpu_per_trial", 1.0, positive=True), gpu)


def parse_wandb(value: Any) -> WandbConfig | None:
    allowed = ("expected {project: NAME, mode: online|offline|disabled, entity: NAME, dir: PATH, "
               "tags: [TAG, ...]} (all optional)")
    if value is None:
        return None
    fields = {"project", "mode", "entity", "dir", "tags", "init_timeout_seconds"}
    if not isinstance(value, dict) or set(value) - fields:
        raise fail("wandb", value, allowed)
    for field in ("project", "entity", "dir"):
        if value.get(field) is not None and (not isinstance(value[field], str) or not value[field]):
            raise fail(f"wandb.{field}", value[field], "expected a non-empty string")
    tags = value.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags)):
        raise fail("wandb.tags", tags, "expected a list of non-empty strings")
    if value.get("mode") not in (None, *WANDB_MODES):
        raise fail("wandb.mode", value["mode"], f"allowed: {', '.join(WANDB_MODES)}")
    timeout = value.get("init_timeout_seconds")
    return WandbConfig(
        project=value.get("project"),
        mode=value.get("mode"),
        entity=value.get("entity"),
        dir=value.get("dir"),
        tags=tuple(tags) if tags is not None else None,
        init_timeout_seconds=(
            number(value, "wandb.init_timeout_seconds", None, positive=True) if timeout is not None else None
        ),
    )


def parse_pack(value: Any) -> int:
    if value is None or value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT32_MAX:
        raise fail(
            "pack", value, f"expected auto or an integer in [1, {INT32_MAX}] (networks trained together)"
        )
    return value


def parse_name(value: Any) -> str:
    """A sweep name usable as one path component on any filesystem."""
    allowed = (
        f"expected a name of 1 to {MAX_NAME_BYTES} bytes without '/', '\\' or control "
        "characters, not starting with _ or ."
    )
    if (
        not isinstance(value, str)
        or not value
        or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
        or any(ch in "/\\" or not ch.isprintable() for ch in value)
        or value.startswith(("_", "."))
        or value != value.strip()
    ):
        raise fail("name", value, allowed)
    return value


def parse_alphas(value: Any) -> tuple[float, ...]:
    if value is None:
        return DEFAULT_ALPHAS
    allowed = "expected a non-empty list of numbers in [0, 1], e.g. [0, 0.5, 1]"
    if not isinstance(value, list) or not value:
        raise fail("alphas", value, allowed)
    for alpha in value:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise fail("alphas", alpha, allowed)
    return tuple(sorted({alpha_key(alpha) for alpha in value}))


CRITICALITY_KEYS = (
    "search", "alphas", "noise_samples", "rtol", "subset", *BISECT_ONLY, *GRID_ONLY,
)


def parse_criticality(value: Any) -> CriticalitySettings | None:
    """The ``criticality`` block: ``search`` (``bisect``, or ``grid`` where the block names
    ``sigmas`` or ``sigma_max`` and no search), the settings both searches use, and those of the
    chosen search only (a setting of the other one is refused)."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    allowed = "expected a mapping with keys " + ", ".join(CRITICALITY_KEYS) + " (each optional)"
    if not isinstance(value, dict):
        raise fail("criticality", value, allowed)
    unknown = sorted(set(value) - set(CRITICALITY_KEYS))
    if unknown:
        raise fail(f"criticality.{unknown[0]}", value[unknown[0]], allowed)
    search = implied_search(value)
    if search not in CRITICALITY_SEARCHES:
        raise fail("criticality.search", search, f"allowed: {', '.join(CRITICALITY_SEARCHES)}")
    other, only = ("bisect", BISECT_ONLY) if search == "grid" else ("grid", GRID_ONLY)
    misplaced = [key for key in only if key in value]
    if misplaced:
        raise fail(
            f"criticality.{misplaced[0]}", value[misplaced[0]],
            f"only search: {other} uses it (this block's search is {search})",
        )
    defaults = CriticalitySettings()
    rtol = number(value, "criticality.rtol", defaults.rtol, positive=True)
    if rtol < 1:
        raise fail("criticality.rtol", rtol, "expected a number >= 1 (a loss ratio)")
    common = {
        "search": search,
        "alphas": integer(value, "criticality.alphas", 2, defaults.alphas),
        "noise_samples": integer(value, "criticality.noise_samples", 1, defaults.noise_samples),
        "rtol": rtol,
        "subset": integer(value, "criticality.subset", 1, defaults.subset),
    }
    if search == "grid":
        return CriticalitySettings(
            sigmas=integer(value, "criticality.sigmas", 2, defaults.sigmas),
            sigma_max=number(value, "criticality.sigma_max", defaults.sigma_max, positive=True),
            **common,
        )
    precision = number(value, "criticality.precision", defaults.precision, positive=True)
    if precision > 1:
        raise fail("criticality.precision", precision, "expected a number in (0, 1] (0.05 = 5%)")
    lo = number(value, "criticality.rel_sigma_lo", defaults.rel_sigma_lo, positive=True)
    hi = number(value, "criticality.rel_sigma_hi", defaults.rel_sigma_hi, positive=True)
    if lo >= hi:
        raise fail("criticality.rel_sigma_lo", lo, f"expected a number below rel_sigma_hi ({hi:g})")
    return CriticalitySettings(precision=precision, rel_sigma_lo=lo, rel_sigma_hi=hi, **common)
