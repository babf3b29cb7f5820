"""Run every benchmark (or those named) and write their JSON into benchmarks/results/.

    python -m benchmarks [--quick] [--threads N] [NAME ...]   # vs_seed roofline pack_kernels conv noise_loss
                                                              # sweep_overhead sweep_scale api_read
                                                              # read_integrity first_result
    python -m benchmarks gpu_check [--smoke]     # alone: imports torch only (no Ray, W&B, orchestrator)

``--quick`` takes about two minutes on a 2-core machine, the full run under
ten; run on an otherwise idle machine (each table warns when the load average
says other processes compete for the cores).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = (
    "vs_seed", "roofline", "pack_kernels", "conv", "noise_loss", "sweep_overhead", "sweep_scale", "api_read",
    "read_integrity", "first_result",
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu_check"]:  # before anything imports Ray or the orchestrator
        from benchmarks import gpu_check

        sys.exit(gpu_check.main(argv[1:]))
    from benchmarks.common import add_arguments

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    forwarded = [*(["--quick"] if args.quick else []), "--threads", str(args.threads)]
    started = time.perf_counter()
    for name in args.names or BENCHMARKS:
        print(f"-- {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main(forwarded)
    print(f"\nall done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
