"""Does the driver keep up as a sweep grows? Thousands of tiny networks through ``run_sweep``.

Each network is tiny (synthetic data, widths [8], 1 epoch, ``pack: 1``, the
``reinit`` swaps only), so the time goes to orchestration: Tune trials, progress
events, store writes. Each network's finish time is its trial row's
``finished_at`` (written when that network is stored, so exact per network;
the progress lines arrive in batches about once a second per Tune trial,
too coarse for a 10-second sweep). The rate at the start is networks per
second between 5% and 25% of the sweep done, at the end between 75% and 95%
(the first and last 5% are Ray's start and the last trials' tail).

    python -m benchmarks.sweep_scale [--quick] [--networks 1000 5000] [--repeat 3]

Each size runs ``--repeat`` times (a fresh store and a fresh Ray each time);
the table has every run and, per size, the median and range of end/start.
``--quick`` runs 300 networks once. Ray is started by the sweep, on every core.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray

from benchmarks.common import busy_warning, configure, publish, table
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep
from trainables.store import Store

START_WINDOW = (0.05, 0.25)
END_WINDOW = (0.75, 0.95)


def tiny_config(store: Path, networks: int) -> dict[str, Any]:
    return {
        "name": f"scale-{networks}", "dataset": "synthetic", "model": "mlp", "widths": [[8]],
        "seeds": networks, "epochs": 1, "batch_size": 256, "optimizer": {"name": "sgd", "lr": 0.1},
        "checkpoints": [0, 1], "swaps": ["reinit"], "pack": 1,
        "resources": {"cpu_per_trial": 1, "gpu_per_trial": 0}, "store": str(store),
    }


def rate(finished: list[float], low: float, high: float) -> float:
    """Networks per second between the moments fractions ``low`` and ``high`` of them were done.

    ``finished``: every network's finish time (s), sorted.
    """
    first, last = math.ceil(low * len(finished)), math.ceil(high * len(finished))
    return (last - first) / max(finished[last - 1] - finished[first - 1], 1e-9)


def finish_times(store: Path, sweep_start: datetime) -> list[float]:
    """Seconds from ``sweep_start`` to each stored network's ``finished_at``, sorted."""
    stamps = Store.open(str(store)).read_index("trials").column("finished_at").to_pylist()
    return sorted((stamp - sweep_start).total_seconds() for stamp in stamps)


def measure(networks: int, store: Path) -> dict[str, Any]:
    sweep_start = datetime.now(UTC)
    started = time.perf_counter()
    outcome = run_sweep(parse_config(tiny_config(store, networks)), log=lambda line: None)
    wall = time.perf_counter() - started
    ray.shutdown()
    finished = finish_times(store, sweep_start)
    result = {
        "networks": networks, "completed": outcome.completed, "failed": outcome.failed,
        "wall_seconds": wall, "first_done_seconds": finished[0],
        "networks_per_second": outcome.completed / wall,
        "start_rate": rate(finished, *START_WINDOW), "end_rate": rate(finished, *END_WINDOW),
    }
    result["end_over_start"] = result["end_rate"] / result["start_rate"]
    print(f"  {networks} networks: {wall:.1f} s, end/start {result['end_over_start']:.2f}", flush=True)
    return result


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per size: median and range of end/start over its runs."""
    lines = []
    for size in sorted({r["networks"] for r in rows}):
        ratios = [r["end_over_start"] for r in rows if r["networks"] == size]
        lines.append(
            f"{size} networks, {len(ratios)} run(s): end/start median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 networks only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the driver (default 1)")
    parser.add_argument("--networks", type=int, nargs="+", help="sweep sizes (default 1000 5000)")
    parser.add_argument("--repeat", type=int, help="runs per size (default 3, --quick 1)")
    args = parser.parse_args(argv)
    mode = configure(args)
    sizes = args.networks or ([300] if args.quick else [1000, 5000])
    repeat = args.repeat or (1 if args.quick else 3)
    warning = busy_warning()
    if ray.is_initialized():
        ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="layerswap-scale-") as scratch:
        rows = [
            measure(n, Path(scratch) / f"store-{n}-{run}") for n in sizes for run in range(repeat)
        ]
    text = table(
        ["networks", "wall s", "first done s", "networks/s", "start /s", "end /s", "end/start"],
        [[r["networks"], r["wall_seconds"], r["first_done_seconds"], r["networks_per_second"],
          r["start_rate"], r["end_rate"], r["end_over_start"]] for r in rows],
    )
    text += "\n" + "\n".join(summary(rows))
    text += (
        "\ntiny networks (synthetic, widths [8], 1 epoch, pack 1, reinit); start = networks/s from 5% "
        "to 25% done, end = from 75% to 95%, from the trial rows' finished_at; wall includes Ray's start"
    )
    publish("sweep_scale", "sweep_scale: thousands of tiny networks", mode, text, {"rows": rows}, warning)


if __name__ == "__main__":
    main()
