"""How long the Python API takes to read a large store: ``open_store(...).swaps()`` on 1,000 networks.

The store is built first by a real sweep of tiny networks (synthetic data, widths [8], 1 epoch,
``reinit`` swaps: 4 swaps rows per network, as ``benchmarks.sweep_scale``), packed automatically so
that it is quick; then each API call is timed ``--repeat`` times from a fresh ``open_store`` (nothing
is cached between calls: each reads every index file again).

    python -m benchmarks.api_read [--quick] [--networks 1000] [--repeat 3] [--store DIR]

``--store DIR`` reuses (or builds there, once) a store instead of a temporary one.
``--quick`` reads 200 networks once.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks.common import busy_warning, configure, publish, table
from benchmarks.sweep_scale import tiny_config
from orchestrator import open_store
from orchestrator.config.sweep_config import parse_config
from orchestrator.run.sweep import run_sweep

CALLS = ("trials", "swaps", "stats")


def build(store: Path, networks: int) -> float:
    """A store of ``networks`` tiny networks (kept if it is already complete); seconds it took."""
    started = time.perf_counter()
    outcome = run_sweep(parse_config({**tiny_config(store, networks), "pack": "auto"}), log=lambda _: None)
    ray.shutdown()
    assert outcome.failed == 0, outcome
    return time.perf_counter() - started


def time_calls(store: Path, repeat: int) -> dict[str, Any]:
    """Seconds of each API call (each from a fresh ``open_store``), and the rows it returned."""
    seconds: dict[str, list[float]] = {call: [] for call in CALLS}
    rows: dict[str, int] = {}
    for _ in range(repeat):
        for call in CALLS:
            started = time.perf_counter()
            frame = getattr(open_store(str(store)), call)()
            seconds[call].append(time.perf_counter() - started)
            rows[call] = len(frame)
    return {"seconds": seconds, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 networks, one repeat")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the driver (default 1)")
    parser.add_argument("--networks", type=int, help="networks in the store (default 1000)")
    parser.add_argument("--repeat", type=int, help="timings per call (default 3, --quick 1)")
    parser.add_argument("--store", type=Path, help="build (once) and read this store, not a temporary one")
    args = parser.parse_args(argv)
    mode = configure(args)
    networks = args.networks or (200 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="layerswap-api-") as scratch:
        store = args.store or Path(scratch) / "store"
        build_seconds = build(store, networks)
        warning = busy_warning()  # after the sweep's own load is gone
        result = time_calls(store, repeat)
    text = table(
        ["call", "rows", "best s", "median s", "worst s"],
        [[f"open_store(...).{call}()", result["rows"][call], min(times), statistics.median(times), max(times)]
         for call, times in result["seconds"].items()],
    )
    text += (f"\n{networks} tiny networks (synthetic, widths [8], 1 epoch, reinit); each call from a fresh "
             f"open_store, {repeat} time(s); the store took {build_seconds:.1f} s to build (or to check)")
    publish("api_read", "api_read: the Python API on a large store", mode, text,
            {"networks": networks, "build_seconds": build_seconds, **result}, warning)


if __name__ == "__main__":
    main()
