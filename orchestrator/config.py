"""Sweep config: YAML in, a validated frozen SweepConfig out.

Every value is checked before anything runs; a bad value raises ConfigError
with one line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainables.datasets import DATASETS
from trainables.models import MODELS
from trainables.plan import (
    DEFAULT_ALPHAS,
    SWAP_KINDS,
    CriticalitySettings,
    MeasurementPlan,
    alpha_key,
)
from trainables.precision import PRECISIONS
from trainables.spec import OptimizerSpec
from trainables.wandb_log import WANDB_MODES, WandbSpec, wandb_spec_to_dict

OPTIMIZERS = ("sgd", "adam")
MAX_RETRIES = 2
"""Times a trial (Tune) or a measurement task (Ray) is rerun after its worker died."""
TOP_LEVEL_KEYS = (
    "name", "dataset", "model", "widths", "seeds", "epochs", "batch_size", "optimizer",
    "checkpoints", "swaps", "rerandomize_draws", "resources", "store", "precision",
    "max_concurrent_trials", "wandb", "pack", "alphas", "criticality",
)


class ConfigError(Exception):
    """One line: the field, the bad value, what is allowed."""


@dataclass(frozen=True)
class Resources:
    """Ray resources per trial: CPUs (>0) and a GPU fraction (0 = CPU only)."""

    cpu_per_trial: float = 1.0
    gpu_per_trial: float = 0.0


@dataclass(frozen=True)
class SweepConfig:
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
    wandb: WandbSpec | None = None
    pack: int = 0
    """Networks (seeds of one width config) trained together per trial; 0 = auto."""
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    """The ``interpolate`` grid (fractions of the way from init to trained)."""
    criticality: CriticalitySettings | None = None
    """Module criticality settings; None = not measured."""

    @property
    def plan(self) -> MeasurementPlan:
        """What the sweep measures on every network (not part of any network's identity)."""
        return MeasurementPlan(self.swaps, self.rerandomize_draws, self.alphas, self.criticality)

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
            raw["wandb"] = {**(raw["wandb"] or {"mode": "online"}), "project": wandb_project}
        if store is not None:
            raw["store"] = store
        if seeds is not None:
            raw["seeds"] = seeds
        if epochs is not None:
            raw["epochs"] = epochs
            raw["checkpoints"] = [c for c in self.checkpoints if c <= epochs]
        return parse_config(raw)

    def to_raw(self) -> dict[str, Any]:
        """The config as plain YAML/JSON values (round-trips through parse_config)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "widths": [list(w) for w in self.widths],
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": {
                "name": self.optimizer.name,
                "lr": self.optimizer.lr,
                "momentum": self.optimizer.momentum,
                "weight_decay": self.optimizer.weight_decay,
            },
            "checkpoints": list(self.checkpoints),
            "swaps": list(self.swaps),
            "rerandomize_draws": self.rerandomize_draws,
            "resources": {
                "cpu_per_trial": self.resources.cpu_per_trial,
                "gpu_per_trial": self.resources.gpu_per_trial,
            },
            "store": self.store,
            "precision": self.precision,
            "max_concurrent_trials": self.max_concurrent_trials,
            "wandb": wandb_spec_to_dict(self.wandb),
            "pack": self.pack or "auto",
            "alphas": list(self.alphas),
            "criticality": None if self.criticality is None else self.criticality.to_dict(),
        }


def load_config(path: str | Path) -> SweepConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"config: cannot read {str(path)!r} ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"config: {str(path)!r} is not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {str(path)!r} must be a YAML mapping of fields, got {raw!r}")
    return parse_config(raw)


def _fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{field}: {value!r} is not allowed; {allowed}")


def _int(raw: dict, field: str, minimum: int, default: int | None = None) -> int:
    value = raw.get(field.rsplit(".", 1)[-1], default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(field, value, f"expected an integer >= {minimum}")
    return value


def _number(raw: dict, field: str, default: float | None, positive: bool) -> float:
    value = raw.get(field.rsplit(".", 1)[-1], default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise _fail(field, value, f"expected a number {'> 0' if positive else '>= 0'}")
    return float(value)


def _choice(raw: dict, field: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    value = raw.get(field, default)
    if value not in allowed:
        raise _fail(field, value, f"allowed: {', '.join(allowed)}")
    return value


def _widths(value: Any) -> tuple[tuple[int, ...], ...]:
    allowed = "expected a non-empty list of width lists of positive integers, e.g. [[256, 128]]"
    if isinstance(value, list) and value and all(isinstance(w, int) for w in value):
        value = [value]  # a single width config written flat
    if not isinstance(value, list) or not value:
        raise _fail("widths", value, allowed)
    configs = []
    for config in value:
        if (
            not isinstance(config, list)
            or not config
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in config)
        ):
            raise _fail("widths", config, allowed)
        configs.append(tuple(config))
    if len(set(configs)) != len(configs):
        raise _fail("widths", value, "each width config may appear once")
    return tuple(configs)


def _seeds(value: Any) -> tuple[int, ...]:
    allowed = "expected an integer n >= 1 (seeds 0..n-1) or a list of distinct integers >= 0"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _fail("seeds", value, allowed)
        return tuple(range(value))
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value)
        or len(set(value)) != len(value)
    ):
        raise _fail("seeds", value, allowed)
    return tuple(value)


def _optimizer(value: Any) -> OptimizerSpec:
    if not isinstance(value, dict):
        raise _fail("optimizer", value, "expected a mapping like {name: sgd, lr: 0.01}")
    unknown = set(value) - {"name", "lr", "momentum", "weight_decay"}
    if unknown:
        raise _fail("optimizer", sorted(unknown)[0], "keys: name, lr, momentum, weight_decay")
    name = _choice(value, "name", OPTIMIZERS)
    momentum = _number(value, "optimizer.momentum", 0.0, positive=False)
    if momentum >= 1:
        raise _fail("optimizer.momentum", momentum, "expected a number in [0, 1)")
    if name == "adam" and momentum:
        raise _fail("optimizer.momentum", momentum, "adam takes no momentum")
    return OptimizerSpec(
        name=name,
        lr=_number(value, "optimizer.lr", None, positive=True),
        momentum=momentum,
        weight_decay=_number(value, "optimizer.weight_decay", 0.0, positive=False),
    )


def _checkpoints(value: Any, epochs: int) -> tuple[int, ...]:
    allowed = f"expected a list of integers in [0, {epochs}] (epochs)"
    if value is None:
        value = []
    if not isinstance(value, list):
        raise _fail("checkpoints", value, allowed)
    for epoch in value:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
            raise _fail("checkpoints", epoch, allowed)
    return tuple(sorted({0, epochs, *value}))


def _swaps(value: Any) -> tuple[str, ...]:
    allowed = f"allowed: {', '.join(SWAP_KINDS)} (baselines 'none' are always measured)"
    if not isinstance(value, list) or not value:
        raise _fail("swaps", value, allowed)
    for kind in value:
        if kind not in SWAP_KINDS:
            raise _fail("swaps", kind, allowed)
    return tuple(kind for kind in SWAP_KINDS if kind in value)


def _resources(value: Any) -> Resources:
    if value is None:
        return Resources()
    if not isinstance(value, dict) or set(value) - {"cpu_per_trial", "gpu_per_trial"}:
        raise _fail("resources", value, "expected {cpu_per_trial: N, gpu_per_trial: F}")
    gpu = _number(value, "resources.gpu_per_trial", 0.0, positive=False)
    if gpu > 1 and not gpu.is_integer():
        raise _fail("resources.gpu_per_trial", gpu, "expected a fraction <= 1 or a whole number")
    return Resources(_number(value, "resources.cpu_per_trial", 1.0, positive=True), gpu)


def _wandb(value: Any) -> WandbSpec | None:
    allowed = "expected {project: NAME, mode: online|offline, entity: NAME, dir: PATH}"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"project", "mode", "entity", "dir",
                                                     "init_timeout_seconds"}:
        raise _fail("wandb", value, allowed)
    project = value.get("project")
    if not isinstance(project, str) or not project:
        raise _fail("wandb.project", project, "expected a W&B project name")
    for field in ("entity", "dir"):
        if value.get(field) is not None and not isinstance(value[field], str):
            raise _fail(f"wandb.{field}", value[field], "expected a string")
    return WandbSpec(
        project=project,
        mode=_choice(value, "mode", WANDB_MODES, "online"),
        entity=value.get("entity"),
        dir=value.get("dir"),
        init_timeout_seconds=_number(value, "wandb.init_timeout_seconds", 60.0, positive=True),
    )


def _pack(value: Any) -> int:
    if value is None or value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail("pack", value, "expected auto or an integer >= 1 (networks trained together)")
    return value


def _alphas(value: Any) -> tuple[float, ...]:
    if value is None:
        return DEFAULT_ALPHAS
    allowed = "expected a non-empty list of numbers in [0, 1], e.g. [0, 0.5, 1]"
    if not isinstance(value, list) or not value:
        raise _fail("alphas", value, allowed)
    for alpha in value:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise _fail("alphas", alpha, allowed)
    return tuple(sorted({alpha_key(alpha) for alpha in value}))


CRITICALITY_KEYS = ("alphas", "sigmas", "sigma_max", "noise_samples", "rtol", "subset")


def _criticality(value: Any) -> CriticalitySettings | None:
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    allowed = "expected a mapping with keys " + ", ".join(CRITICALITY_KEYS) + " (each optional)"
    if not isinstance(value, dict):
        raise _fail("criticality", value, allowed)
    unknown = sorted(set(value) - set(CRITICALITY_KEYS))
    if unknown:
        raise _fail(f"criticality.{unknown[0]}", value[unknown[0]], allowed)
    defaults = CriticalitySettings()
    rtol = _number(value, "criticality.rtol", defaults.rtol, positive=True)
    if rtol < 1:
        raise _fail("criticality.rtol", rtol, "expected a number >= 1 (a loss ratio)")
    return CriticalitySettings(
        alphas=_int(value, "criticality.alphas", 2, defaults.alphas),
        sigmas=_int(value, "criticality.sigmas", 2, defaults.sigmas),
        sigma_max=_number(value, "criticality.sigma_max", defaults.sigma_max, positive=True),
        noise_samples=_int(value, "criticality.noise_samples", 1, defaults.noise_samples),
        rtol=rtol,
        subset=_int(value, "criticality.subset", 1, defaults.subset),
    )


def parse_config(raw: dict[str, Any]) -> SweepConfig:
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise _fail(unknown[0], raw[unknown[0]], f"unknown field; fields: {', '.join(TOP_LEVEL_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith(("_", ".")):
        raise _fail("name", name, "expected a non-empty name without '/' not starting with _ or .")
    epochs = _int(raw, "epochs", 1)
    store = raw.get("store", f"./runs/{name}")
    if not isinstance(store, str) or not store.strip():
        raise _fail("store", store, "expected a path or URI")
    return SweepConfig(
        name=name,
        dataset=_choice(raw, "dataset", DATASETS),
        model=_choice(raw, "model", MODELS, "mlp"),
        widths=_widths(raw.get("widths")),
        seeds=_seeds(raw.get("seeds")),
        epochs=epochs,
        batch_size=_int(raw, "batch_size", 1),
        optimizer=_optimizer(raw.get("optimizer")),
        checkpoints=_checkpoints(raw.get("checkpoints"), epochs),
        swaps=_swaps(raw.get("swaps")),
        store=store,
        rerandomize_draws=_int(raw, "rerandomize_draws", 1, default=1),
        resources=_resources(raw.get("resources")),
        precision=_choice(raw, "precision", PRECISIONS, "fp32"),
        max_concurrent_trials=_int(raw, "max_concurrent_trials", 0, default=0),
        wandb=_wandb(raw.get("wandb")),
        pack=_pack(raw.get("pack")),
        alphas=_alphas(raw.get("alphas")),
        criticality=_criticality(raw.get("criticality")),
    )
