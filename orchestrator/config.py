"""Sweep config: YAML in, a validated frozen SweepConfig out.

Every value is checked before anything runs; a bad value raises ConfigError
with one line naming the field, the value (shortened to a few dozen
characters) and what is allowed. Integers are bounded by the Arrow column that
stores them, and the grid by :data:`MAX_NETWORKS`, before it is expanded.

This module imports nothing heavy (no torch, Ray or pyarrow): a refused
config costs a fraction of a second.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.yaml_loader import YamlRefused, load_yaml
from trainables.choices import DATASETS, MODELS, PRECISIONS, WANDB_MODES
from trainables.errors import UserError
from trainables.plan import (
    DEFAULT_ALPHAS,
    SWAP_KINDS,
    CriticalitySettings,
    MeasurementPlan,
    alpha_key,
)
from trainables.spec import OptimizerSpec

OPTIMIZERS = ("sgd", "adam")
MAX_RETRIES = 2
"""Times a trial (Tune) or a measurement task (Ray) is rerun after its worker died."""
TOP_LEVEL_KEYS = (
    "name", "dataset", "model", "widths", "seeds", "epochs", "batch_size", "optimizer",
    "checkpoints", "swaps", "rerandomize_draws", "resources", "store", "precision",
    "max_concurrent_trials", "wandb", "pack", "checkpoint_seconds", "alphas", "criticality",
)


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_NETWORKS = 1_000_000
"""Networks (width configs x seeds) one sweep may hold."""
MAX_NAME_BYTES = 100
"""A sweep name is a directory name (``sweeps/<name>/``) and part of Tune's experiment name."""
ECHO_CHARS = 40
"""Longest echo of a bad value in an error line."""


class ConfigError(UserError):
    """One line: the field, the bad value, what is allowed."""


_ECHO = reprlib.Repr()
_ECHO.maxlevel = 3
_ECHO.maxtuple = _ECHO.maxlist = _ECHO.maxdict = _ECHO.maxset = 4
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = ECHO_CHARS


def echo(value: Any) -> str:
    """``repr(value)`` cut to about ECHO_CHARS characters, at bounded cost for any value."""
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS + 5 else text[:ECHO_CHARS] + "…"


@dataclass(frozen=True)
class Resources:
    """Ray resources per trial: CPUs (>0) and a GPU fraction (0 = CPU only)."""

    cpu_per_trial: float = 1.0
    gpu_per_trial: float = 0.0


@dataclass(frozen=True)
class WandbConfig:
    """The config's ``wandb:`` block (and ``--wandb``): None = not set here.

    What is not set comes from W&B's environment variables when the sweep
    starts (``orchestrator.wandb_settings.resolve_wandb``).
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
            raw["wandb"] = {**(raw["wandb"] or {}), "project": wandb_project}
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
            "wandb": self.wandb.to_raw() if self.wandb is not None else None,
            "pack": self.pack or "auto",
            # only when set, so that existing sweeps' records (hashed from this) keep their names
            **({"checkpoint_seconds": self.checkpoint_seconds} if self.checkpoint_seconds != 60.0 else {}),
            "alphas": list(self.alphas),
            "criticality": None if self.criticality is None else self.criticality.to_dict(),
        }


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate the sweep config at ``path`` (see :mod:`orchestrator.yaml_loader`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config: cannot read {str(path)!r} ({err.strerror})") from None
    try:
        raw = load_yaml(data)
    except YamlRefused as err:
        raise ConfigError(f"config: {str(path)!r} {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"config: {str(path)!r} is not valid YAML{line}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config: {str(path)!r} must be a YAML mapping of fields, got {echo(raw)}")
    return parse_config(raw)


def _fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{field}: {echo(value)} is not allowed; {allowed}")


def _int(raw: dict, field: str, minimum: int, default: int | None = None, maximum: int = INT32_MAX) -> int:
    """An integer in [minimum, maximum]; the default maximum is that of an int32 column."""
    value = raw.get(field.rsplit(".", 1)[-1], default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _fail(field, value, f"expected an integer in [{minimum}, {maximum}]")
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
    allowed = f"expected a non-empty list of width lists of integers in [1, {INT32_MAX}], e.g. [[256, 128]]"
    if isinstance(value, list) and value and all(isinstance(w, int) for w in value):
        value = [value]  # a single width config written flat
    if not isinstance(value, list) or not value:
        raise _fail("widths", value, allowed)
    configs = []
    for config in value:
        if (
            not isinstance(config, list)
            or not config
            or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= INT32_MAX for w in config)
        ):
            raise _fail("widths", config, allowed)
        configs.append(tuple(config))
    if len(set(configs)) != len(configs):
        raise _fail("widths", value, "each width config may appear once")
    return tuple(configs)


def _seeds(value: Any, width_configs: int) -> tuple[int, ...]:
    """The seeds, refused before they are expanded when the grid would exceed MAX_NETWORKS."""
    allowed = (
        f"expected an integer n in [1, {MAX_NETWORKS}] (seeds 0..n-1) or a list of distinct "
        f"integers in [0, {INT64_MAX}]"
    )
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, list):
        count = len(value)
    if count is not None and count * width_configs > MAX_NETWORKS:
        raise _fail(
            "seeds", value, f"{count} seeds x {width_configs} width configs is more than "
            f"{MAX_NETWORKS} networks in one sweep; split it into several sweeps"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _fail("seeds", value, allowed)
        return tuple(range(value))
    if not isinstance(value, list) or not value:
        raise _fail("seeds", value, allowed)
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= INT64_MAX:
            raise _fail("seeds", seed, allowed)
    if len(set(value)) != len(value):
        raise _fail("seeds", value, "each seed may appear once")
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


def _wandb(value: Any) -> WandbConfig | None:
    allowed = ("expected {project: NAME, mode: online|offline|disabled, entity: NAME, dir: PATH, "
               "tags: [TAG, ...]} (all optional)")
    if value is None:
        return None
    fields = {"project", "mode", "entity", "dir", "tags", "init_timeout_seconds"}
    if not isinstance(value, dict) or set(value) - fields:
        raise _fail("wandb", value, allowed)
    for field in ("project", "entity", "dir"):
        if value.get(field) is not None and (not isinstance(value[field], str) or not value[field]):
            raise _fail(f"wandb.{field}", value[field], "expected a non-empty string")
    tags = value.get("tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags)):
        raise _fail("wandb.tags", tags, "expected a list of non-empty strings")
    if value.get("mode") not in (None, *WANDB_MODES):
        raise _fail("wandb.mode", value["mode"], f"allowed: {', '.join(WANDB_MODES)}")
    timeout = value.get("init_timeout_seconds")
    return WandbConfig(
        project=value.get("project"),
        mode=value.get("mode"),
        entity=value.get("entity"),
        dir=value.get("dir"),
        tags=tuple(tags) if tags is not None else None,
        init_timeout_seconds=(
            _number(value, "wandb.init_timeout_seconds", None, positive=True) if timeout is not None else None
        ),
    )


def _pack(value: Any) -> int:
    if value is None or value == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT32_MAX:
        raise _fail(
            "pack", value, f"expected auto or an integer in [1, {INT32_MAX}] (networks trained together)"
        )
    return value


def _name(value: Any) -> str:
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
        raise _fail("name", value, allowed)
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
    name = _name(raw.get("name"))
    epochs = _int(raw, "epochs", 1)
    store = raw.get("store", f"./runs/{name}")
    if not isinstance(store, str) or not store.strip():
        raise _fail("store", store, "expected a path or URI")
    widths = _widths(raw.get("widths"))
    return SweepConfig(
        name=name,
        dataset=_choice(raw, "dataset", DATASETS),
        model=_choice(raw, "model", MODELS, "mlp"),
        widths=widths,
        seeds=_seeds(raw.get("seeds"), len(widths)),
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
        checkpoint_seconds=_number(raw, "checkpoint_seconds", 60.0, positive=False),
        alphas=_alphas(raw.get("alphas")),
        criticality=_criticality(raw.get("criticality")),
    )
