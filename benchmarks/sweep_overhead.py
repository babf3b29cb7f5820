"""Ray Tune's overhead: the demo sweep through ``run_sweep`` against the same trials in one process.

In one process: load the dataset once, then :func:`run_networks` for every
trial of the grid in turn (same store writes), once with torch using every
core and once with ``cpu_per_trial`` threads as a Ray trial has. Through Ray:
:func:`run_sweep` into a fresh store, first with Ray started by the sweep
itself (``cold``, as ``layerswap sweep`` on a laptop), then again on the Ray
instance left running (``warm``, as when joining a running cluster).

Ray runs ``concurrency = cores / cpu_per_trial`` trials at once, so the wall
time it could reach with no overhead at all is ``ideal = load + (trials at
cpu_per_trial threads) / concurrency``; overhead = 1 - ideal / wall. The
``vs 1 process`` column compares with the faster of the two in-process runs.

    python -m benchmarks.sweep_overhead [--quick]
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from benchmarks.common import DEMO_CONFIG, busy_warning, parse_mode, publish, table
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import SweepConfig, load_config
from orchestrator.run.budget import local_budget
from orchestrator.run.packing import make_packs
from orchestrator.run.sweep import run_sweep
from trainables.data.datasets import load_dataset
from trainables.store import Store
from trainables.worker.pack_job import Placement, run_networks

CPU = torch.device("cpu")


def in_process(config: SweepConfig, threads: int) -> tuple[float, float, int]:
    """(dataset load seconds, seconds for every trial, trials) run one after another here.

    The trials are the sweep's own packs (:func:`make_packs`), on ``threads``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        started = time.perf_counter()
        arrays = load_dataset(config.dataset)
        data = arrays.tensors(CPU)
        loaded = time.perf_counter()
        store = Store.open(config.store)
        slots = max(1, math.floor(len(os.sched_getaffinity(0)) / config.resources.cpu_per_trial))
        budget = local_budget(config.resources, lambda _: None)
        datasets = {config.dataset: arrays}
        packs = make_packs(config, expand_grid(config), datasets, slots, budget, lambda _: None)
        for pack in packs:
            run_networks(pack, config.plan, data, store, config.name, Placement.here(CPU))
        return loaded - started, time.perf_counter() - loaded, len(packs)
    finally:
        torch.set_num_threads(previous)


def through_ray(config: SweepConfig) -> tuple[float, int]:
    """(wall seconds, completed networks) of ``run_sweep``."""
    clock = time.perf_counter()
    outcome = run_sweep(config, log=lambda _: None)
    return time.perf_counter() - clock, outcome.completed


def overhead_row(
    label: str, wall: float, ideal: float, one_process: float, networks: int, through_ray: bool
) -> dict[str, Any]:
    return {
        "run": label, "wall_seconds": wall, "ideal_seconds": ideal, "networks": networks,
        "networks_per_minute": 60 * networks / wall,
        "overhead_fraction": 1 - ideal / wall if through_ray else None,
        "overhead_vs_one_process": 1 - one_process / wall if through_ray else None,
    }


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    if ray.is_initialized():
        ray.shutdown()
    demo = load_config(DEMO_CONFIG)
    with tempfile.TemporaryDirectory(prefix="layerswap-bench-") as scratch:

        def config(name: str) -> SweepConfig:
            store = str(Path(scratch) / name)
            return demo.with_overrides(store=store, seeds=mode.pick(2, None), epochs=mode.pick(1, None))

        baseline = config("in-process")
        cores = len(os.sched_getaffinity(0))
        per_trial_threads = max(1, int(baseline.resources.cpu_per_trial))
        load_seconds, trial_seconds, n_trials = in_process(baseline, per_trial_threads)
        n_networks = len(expand_grid(baseline))
        all_cores = sum(in_process(config("in-process-all-cores"), cores)[:2])
        concurrency = max(1, min(n_trials, math.floor(cores / baseline.resources.cpu_per_trial)))
        ideal = load_seconds + trial_seconds / concurrency
        one_process = min(all_cores, load_seconds + trial_seconds)
        cold_wall, cold_done = through_ray(config("ray-cold"))
        warm_wall, warm_done = through_ray(config("ray-warm"))
        ray.shutdown()
    rows = [
        overhead_row(f"1 process, {per_trial_threads} thread(s)", load_seconds + trial_seconds, ideal,
                     one_process, n_networks, through_ray=False),
        overhead_row(f"1 process, {cores} threads", all_cores, ideal, one_process, n_networks,
                     through_ray=False),
        overhead_row("Ray, cold start", cold_wall, ideal, one_process, cold_done, through_ray=True),
        overhead_row("Ray, running", warm_wall, ideal, one_process, warm_done, through_ray=True),
    ]
    text = table(
        ["run", "networks", "wall s", "networks/min", "overhead", "vs 1 process"],
        [[r["run"], r["networks"], r["wall_seconds"], r["networks_per_minute"],
          percent(r["overhead_fraction"]), percent(r["overhead_vs_one_process"])] for r in rows],
    )
    text += (
        f"\n{demo.name}: {n_networks} networks in {n_trials} trials (packs), "
        f"{baseline.epochs} epochs each, cpu_per_trial "
        f"{baseline.resources.cpu_per_trial:g}, {concurrency} at once on {cores} cores; "
        f"ideal = load {load_seconds:.1f} s + trials at {per_trial_threads} thread(s) {trial_seconds:.1f} s "
        f"/ {concurrency} = {ideal:.1f} s"
    )
    payload = {
        "config": "configs/demo.yaml", "trials": n_trials, "epochs": baseline.epochs,
        "concurrency": concurrency, "load_seconds": load_seconds, "in_process_trial_seconds": trial_seconds,
        "ideal_seconds": ideal, "rows": rows,
    }
    publish("sweep_overhead", "sweep_overhead: Ray Tune against one process", mode, text, payload, warning)


if __name__ == "__main__":
    main()
