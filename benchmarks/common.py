"""What every benchmark shares: the networks, the machine description, timing, tables, JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orchestrator.config.blocks import Resources
from orchestrator.config.sweep_config import SweepConfig, load_config
from orchestrator.run.budget import local_budget
from orchestrator.run.packing import largest_pack, optimizer_slots
from trainables.data.datasets import load_dataset, normalization
from trainables.data.tensors import DatasetTensors
from trainables.models import registry
from trainables.plan import SwapKey, plan_keys
from trainables.spec import TrialSpec
from trainables.train.network import train_network
from trainables.train.pack import train_pack
from trainables.train.pack_shape import PackShape

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SEED_CONFIG = REPO / "configs" / "seed.yaml"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
BATCH = 256
N_FEATURES, N_CLASSES = 784, 10
"""MNIST's shapes and the seed notebook's batch size, for benchmarks on synthetic tensors."""

NETWORKS: dict[str, tuple[int, ...]] = {
    "small": (256, 128, 64, 32),
    "seed": (2048, 1024, 512, 256),
}
"""Hidden widths of the two benchmarked MLPs (784 -> widths -> 10)."""

QUICK_STEPS: dict[str, int] = {"small": 100, "seed": 20}
"""Training steps timed per network in a quick run (a full run times one whole epoch)."""

THREADS = 2
"""Torch threads for every measured loop, on both sides of every comparison."""


@dataclass(frozen=True)
class Mode:
    """How long to measure: ``quick`` for a 1-2 minute run, else the full run (< 10 minutes)."""

    quick: bool

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


def parse_mode(description: str, argv: Sequence[str] | None = None) -> Mode:
    """``--quick`` and ``--threads`` from the command line; sets the torch thread count."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    return configure(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short measurements (about 1-2 minutes in all)")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help=f"torch threads for both sides (default {THREADS})"
    )


def configure(args: argparse.Namespace) -> Mode:
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    return Mode(args.quick)


def device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def synchronize(where: torch.device) -> None:
    if where.type == "cuda":
        torch.cuda.synchronize(where)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The machine and software a measurement ran on, and how busy the machine was (load average)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def cpu_busy_fraction(seconds: float = 1.0) -> float | None:
    """Fraction of all cores busy (or stolen by the hypervisor) over ``seconds`` while we sleep.

    From /proc/stat; None where it is unreadable.
    """

    def sample() -> list[int]:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except (OSError, ValueError, IndexError):
        return None
    delta = [a - b for a, b in zip(after, before, strict=True)]
    idle = delta[3] + delta[4]  # idle, iowait
    return 1 - idle / max(1, sum(delta))


def busy_warning() -> str | None:
    """A warning line when other processes keep the cores busy (the figures are then unreliable)."""
    busy = cpu_busy_fraction()
    if busy is not None and busy > 0.2:
        return f"warning: the cores were {100 * busy:.0f}% busy before measuring; figures are unreliable"
    return None


def best_seconds(run: Callable[[], object], repeats: int, where: torch.device, warmup: int = 1) -> float:
    """Shortest wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls, in seconds.

    The shortest, not the median: interference only ever adds time, so the
    minimum is the best estimate of what the machine can do.
    """
    for _ in range(warmup):
        run()
    synchronize(where)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize(where)
        times.append(time.perf_counter() - started)
    return min(times)


def mnist(where: torch.device) -> DatasetTensors:
    return load_dataset("mnist").tensors(where)


def subset(data: DatasetTensors, n_train: int) -> DatasetTensors:
    """The first ``n_train`` training samples (to time a fixed number of steps), all test samples."""
    x_train, y_train = data.x_train[:n_train], data.y_train[:n_train]
    return DatasetTensors(x_train, y_train, data.x_test, data.y_test, data.n_classes)


def seed_config() -> SweepConfig:
    return load_config(SEED_CONFIG)


def network_spec(widths: tuple[int, ...], seed: int = 0, config: SweepConfig | None = None) -> TrialSpec:
    """The seed notebook's trial (configs/seed.yaml: SGD lr 0.01, batch 256, ...) with ``widths``."""
    config = config or seed_config()
    mean, std = normalization(config.dataset)
    return TrialSpec(
        dataset=config.dataset, data_mean=mean, data_std=std, model=config.model, widths=widths,
        seed=seed, epochs=config.epochs, batch_size=config.batch_size, optimizer=config.optimizer,
        checkpoints=config.checkpoints, precision=config.precision,
    )


def seed_swap_keys(spec: TrialSpec, model: nn.Module) -> list[SwapKey]:
    """Every swap the seed config measures (configs/seed.yaml's plan) on ``model``."""
    layers = [layer.name for layer in registry.family(spec.model).layers(model)]
    return plan_keys(seed_config().plan, layers, spec.checkpoints)


def mnist_shape(widths: tuple[int, ...], config: SweepConfig | None = None) -> PackShape:
    """A trial of ``widths`` on MNIST with the seed config's batch, checkpoints and optimizer."""
    config = config or seed_config()
    return PackShape(config.model, widths, (N_FEATURES,), N_CLASSES, 60_000, 10_000, config.batch_size,
                     len(config.checkpoints), optimizer_slots(config.optimizer))


def sweep_pack(widths: tuple[int, ...], where: torch.device) -> int:
    """The K a sweep's ``pack: auto`` would use for ``widths`` here (a whole GPU, or this CPU's threads)."""
    threads = torch.get_num_threads()
    resources = Resources(threads, 1.0 if where.type == "cuda" else 0.0)
    budget = local_budget(resources, lambda line: None)
    return largest_pack(mnist_shape(widths), budget, threads, gpu=where.type == "cuda")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in pairs)

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def publish(
    name: str, title: str, mode: Mode, text: str, payload: dict[str, Any], warning: str | None
) -> None:
    """Print ``text`` (and ``warning``) under ``title`` and write ``benchmarks/results/<name>.json``.

    The JSON holds the machine, the mode, ``payload`` and the warning.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "benchmark": name,
        "quick": mode.quick,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
        "warning": warning,
    }
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    if warning:
        text += f"\n{warning}"
    print(f"\n== {title} ==\n{text}\n(written to {path.relative_to(REPO)})", flush=True)


WARMUP_STEPS = 10


def layerswap_steps(spec: TrialSpec, data: DatasetTensors, steps: int, pack: int) -> float:
    """Training samples/s of layerswap (all networks of the pack together) over ``steps`` minibatches.

    :func:`train_network` for a pack of 1, else :func:`train_pack` of seeds
    ``spec.seed ..``; data and networks on ``data``'s device; after a warm-up.
    """
    one_epoch = replace(spec, epochs=1, checkpoints=(0, 1))
    specs = [replace(one_epoch, seed=spec.seed + k) for k in range(pack)]
    where = data.x_train.device
    warm = subset(data, WARMUP_STEPS * spec.batch_size)
    measured = subset(data, min(steps * spec.batch_size, data.x_train.shape[0]))
    if pack == 1:
        train_network(one_epoch, warm, where)
        seconds = train_network(one_epoch, measured, where).train_seconds
    else:
        train_pack(specs, warm, where)
        seconds = train_pack(specs, measured, where)[0].train_seconds * pack
    return pack * measured.x_train.shape[0] / seconds
