"""Does the driver keep up as a sweep grows? Thousands of tiny networks through ``run_sweep``.

Each network is tiny (synthetic data, widths [8], 1 epoch, ``pack: 1``, the
``reinit`` swaps only), so the time goes to orchestration: Tune trials, progress
events, store writes. The sweep's own progress lines ("done N/total") are
timestamped as they arrive; the rate at the start is networks per second
between 5% and 25% of the sweep done, at the end between 75% and 95% (the
first and last 5% are Ray's start and the last trials' tail).

    python -m benchmarks.sweep_scale [--quick] [--networks 1000 5000]

``--quick`` runs 300 networks. Ray is started by the sweep, on every core.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks.common import busy_warning, configure, publish, table
from orchestrator.config import parse_config
from orchestrator.launch import run_sweep

DONE = re.compile(r"done (\d+)/(\d+)")
START_WINDOW = (0.05, 0.25)
END_WINDOW = (0.75, 0.95)


def tiny_config(store: Path, networks: int) -> dict[str, Any]:
    return {
        "name": f"scale-{networks}", "dataset": "synthetic", "model": "mlp", "widths": [[8]],
        "seeds": networks, "epochs": 1, "batch_size": 256, "optimizer": {"name": "sgd", "lr": 0.1},
        "checkpoints": [0, 1], "swaps": ["reinit"], "pack": 1,
        "resources": {"cpu_per_trial": 1, "gpu_per_trial": 0}, "store": str(store),
    }


def rate(marks: list[tuple[float, int]], total: int, low: float, high: float) -> float:
    """Networks per second between the first moments ``low`` and ``high`` of ``total`` were done."""

    def when(fraction: float) -> tuple[float, int]:
        return next((t, done) for t, done in marks if done >= fraction * total)

    (t0, n0), (t1, n1) = when(low), when(high)
    return (n1 - n0) / max(t1 - t0, 1e-9)


def measure(networks: int, scratch: Path) -> dict[str, Any]:
    marks: list[tuple[float, int]] = []
    started = time.perf_counter()

    def log(line: str) -> None:
        found = DONE.search(line)
        if found:
            marks.append((time.perf_counter() - started, int(found.group(1))))

    config = parse_config(tiny_config(scratch / f"store-{networks}", networks))
    outcome = run_sweep(config, log=log)
    wall = time.perf_counter() - started
    ray.shutdown()
    total = marks[-1][1] if marks else 0
    result = {
        "networks": networks, "completed": outcome.completed, "failed": outcome.failed,
        "wall_seconds": wall, "first_done_seconds": marks[0][0] if marks else None,
        "networks_per_second": outcome.completed / wall,
        "start_rate": rate(marks, total, *START_WINDOW) if total else None,
        "end_rate": rate(marks, total, *END_WINDOW) if total else None,
    }
    print(f"  {networks} networks: {wall:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 networks only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the driver (default 1)")
    parser.add_argument("--networks", type=int, nargs="+", help="sweep sizes (default 1000 5000)")
    args = parser.parse_args(argv)
    mode = configure(args)
    sizes = args.networks or ([300] if args.quick else [1000, 5000])
    warning = busy_warning()
    if ray.is_initialized():
        ray.shutdown()
    with tempfile.TemporaryDirectory(prefix="layerswap-scale-") as scratch:
        rows = [measure(n, Path(scratch)) for n in sizes]
    text = table(
        ["networks", "wall s", "first done s", "networks/s", "start /s", "end /s", "end/start"],
        [[r["networks"], r["wall_seconds"], r["first_done_seconds"], r["networks_per_second"],
          r["start_rate"], r["end_rate"], r["end_rate"] / r["start_rate"] if r["start_rate"] else None]
         for r in rows],
    )
    text += (
        "\ntiny networks (synthetic, widths [8], 1 epoch, pack 1, reinit); start = networks/s from 5% "
        "to 25% done, end = from 75% to 95%; wall includes Ray's start"
    )
    publish("sweep_scale", "sweep_scale: thousands of tiny networks", mode, text, {"rows": rows}, warning)


if __name__ == "__main__":
    main()
