"""The ``layerswap`` command line: sweep, report, ls, data, preflight, verify."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.config import ConfigError, Resources, load_config
from orchestrator.verdicts import DEFAULT_CHANCE_MARGIN, DEFAULT_ROBUST_DROP, Thresholds
from trainables.datasets import DATASETS, DataError, prepare_dataset
from trainables.plan import SWAP_KINDS
from trainables.store import Store, StoreError


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1 (accuracy as a fraction, not points)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fraction in (0, 1); thresholds are fractions of accuracy, not points "
            "(0.05 = 5 points)"
        )
    return value


def swap_kinds(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated swap kinds, in their canonical order."""
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in SWAP_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed kinds are {', '.join(SWAP_KINDS)}")
    return tuple(kind for kind in SWAP_KINDS if kind in kinds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerswap", description="Which layers of a trained network matter? Sweeps of layer swaps."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="train a sweep's networks and measure every swap")
    sweep.add_argument("config", help="sweep config (YAML), e.g. configs/demo.yaml")
    sweep.add_argument("--store", help="store path or URI (overrides the config's store)")
    sweep.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    sweep.add_argument("--seeds", type=int, help="use seeds 0..N-1 (overrides the config)")
    sweep.add_argument("--epochs", type=int, help="train for N epochs (overrides the config)")
    sweep.add_argument(
        "--shared-fs", action="store_true",
        help="the local store path is mounted by every node of the cluster",
    )
    sweep.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    sweep.add_argument("--wandb", metavar="PROJECT", help="log every network to this W&B project")

    analyze = commands.add_parser(
        "analyze", help="measure stored networks (new swap kinds, more draws, criticality) without training"
    )
    analyze.add_argument("store", help="store path or URI")
    analyze.add_argument("--sweep", help="only the networks of this sweep")
    analyze.add_argument(
        "--swaps", type=swap_kinds, metavar="KINDS",
        help=f"comma-separated kinds ({', '.join(SWAP_KINDS)}; default: what the sweeps' configs asked for)",
    )
    analyze.add_argument("--draws", type=int, help="rerandomize draws per layer (default: as recorded)")
    analyze.add_argument(
        "--criticality", action="store_true",
        help="measure module criticality of every layer (settings as recorded, else the defaults)",
    )
    analyze.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    analyze.add_argument("--shared-fs", action="store_true",
                         help="the local store path is mounted by every node of the cluster")
    analyze.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per network measured")
    analyze.add_argument("--gpus-per-task", type=float, default=0.0, help="GPU share per network measured")

    report = commands.add_parser("report", help="aggregate swap statistics, write tables and figures")
    report.add_argument("store", help="store path or URI")
    report.add_argument("--out", help="output directory (default: STORE/report)")
    report.add_argument("--sweep", help="only this sweep")
    report.add_argument(
        "--robust-drop", type=fraction, default=DEFAULT_ROBUST_DROP, metavar="FRACTION",
        help="robust: the 95%% CI of the drop of reinit@0 lies below this (a fraction: 0.05 = 5 points)",
    )
    report.add_argument(
        "--chance-margin", type=fraction, default=DEFAULT_CHANCE_MARGIN, metavar="FRACTION",
        help="critical: the accuracy's 95%% CI upper bound lies within this of chance "
        "(a fraction: 0.1 = 10 points)",
    )

    listing = commands.add_parser("ls", help="list the trials in a store")
    listing.add_argument("store", help="store path or URI")
    listing.add_argument("--sweep", help="only this sweep")

    data = commands.add_parser("data", help="prepare a dataset under the data root")
    data.add_argument("name", choices=DATASETS)
    data.add_argument(
        "--root", type=Path, help="data root (default: $LAYERSWAP_DATA, else ~/.cache/layerswap/data)"
    )

    preflight = commands.add_parser(
        "preflight", help="check every Ray node: versions, GPUs, and a write/read/delete of the store"
    )
    preflight.add_argument("--address", help="Ray cluster to check (default: start Ray on this machine)")
    preflight.add_argument("--store", help="store path or URI to probe (default: the config's store)")
    preflight.add_argument("--config", help="sweep config: compare its resources per trial with the nodes")

    verify = commands.add_parser("verify", help="check every trial's files against the store's index")
    verify.add_argument("store", help="store path or URI")
    return parser


def command_sweep(args: argparse.Namespace) -> int:
    from orchestrator.launch import run_sweep

    config = load_config(args.config).with_overrides(args.store, args.seeds, args.epochs, args.wandb)
    outcome = run_sweep(config, address=args.address, shared_fs=args.shared_fs)
    measured = outcome.measured
    print(
        f"sweep {config.name}: {outcome.completed} trained, {outcome.skipped} skipped "
        f"(already trained), {outcome.failed} failed; {measured.networks} measured "
        f"({measured.rows} new rows), {measured.failed} failed; in {outcome.wall_seconds:.1f} s"
    )
    print(f"store: {outcome.store_uri}")
    if outcome.failed or measured.failed:
        print(
            f"layerswap: error: {outcome.failed + measured.failed} networks failed; "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return 1
    store = Store.open(outcome.store_uri)
    nothing_new = outcome.completed == 0 and measured.rows == 0
    if not args.no_report and nothing_new and store.exists("report/report.md"):
        print(f"report: {store.path('report')} (up to date: nothing new was trained or measured)")
    elif not args.no_report:
        from orchestrator.report import write_report

        written = write_report(store, sweep=config.name)
        print(f"report: {written[0].rsplit('/', 1)[0]}")
        if config.wandb is not None:
            from orchestrator.wandb_report import attach_report

            attach_report(config.wandb, config.name, store.fs, written)
    return 0


def command_analyze(args: argparse.Namespace) -> int:
    from orchestrator.analyze import analyze_store

    if args.draws is not None and args.draws < 1:
        raise ConfigError(f"--draws: {args.draws} is not allowed; expected an integer >= 1")
    resources = Resources(args.cpus_per_task, args.gpus_per_task)
    outcome = analyze_store(
        Store.open(args.store), args.sweep, args.swaps, args.draws, resources, args.address, args.shared_fs,
        criticality=args.criticality,
    )
    print(
        f"analyze: {outcome.networks} networks measured ({outcome.rows} new rows), "
        f"{outcome.failed} failed, in {outcome.wall_seconds:.1f} s"
    )
    if outcome.failed:
        print(f"layerswap: error: {outcome.failed} networks failed; run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0


def command_report(args: argparse.Namespace) -> int:
    from orchestrator.report import write_report

    written = write_report(
        Store.open(args.store), out_dir=args.out, sweep=args.sweep,
        thresholds=Thresholds(args.robust_drop, args.chance_margin),
    )
    for path in written:
        print(path)
    return 0


def command_ls(args: argparse.Namespace) -> int:
    from orchestrator.listing import format_listing

    print(format_listing(Store.open(args.store), sweep=args.sweep))
    return 0


def command_data(args: argparse.Namespace) -> int:
    print(prepare_dataset(args.name, args.root))
    return 0


def command_preflight(args: argparse.Namespace) -> int:
    from orchestrator.launch import connect_ray
    from orchestrator.preflight import format_preflight, run_preflight

    config = load_config(args.config) if args.config else None
    store = args.store or (config.store if config else None)
    connect_ray(args.address)
    result = run_preflight(store, config.resources if config else None)
    print(format_preflight(result))
    return 1 if result.problems else 0


def command_verify(args: argparse.Namespace) -> int:
    from orchestrator.verify import verify_store

    result = verify_store(Store.open(args.store))
    for problem in result.problems:
        print(problem)
    if result.problems:
        trials = len({problem.trial_id for problem in result.problems})
        print(f"layerswap: error: {len(result.problems)} problem(s) in {trials} of {result.trials} trials",
              file=sys.stderr)
        return 1
    print(f"ok: {result.trials} trials, {result.files} files verified")
    return 0


COMMANDS = {
    "sweep": command_sweep,
    "analyze": command_analyze,
    "report": command_report,
    "ls": command_ls,
    "data": command_data,
    "preflight": command_preflight,
    "verify": command_verify,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from orchestrator.report import ReportError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, StoreError, DataError, ReportError) as err:
        print(f"layerswap: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerswap: interrupted; finished trials are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
