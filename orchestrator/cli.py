"""The ``layerswap`` command line: sweep, report, ls, data, preflight, verify.

One error path: an expected failure (:class:`trainables.errors.UserError`: a
bad config, an unreachable or unwritable store, a cluster that does not
answer, a damaged store) and a bad command line are one line on stderr, exit
2; an interrupt (Ctrl-C, SIGTERM) one line, exit 130; anything else one line
naming a log file that holds the traceback, exit 1. Every line has its
credentials redacted.

This module and the config parser import nothing heavy: torch, Ray and
pyarrow are imported by the command that needs them, so ``--help`` and a
refused config answer at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from orchestrator.config.blocks import Resources
from orchestrator.config.sweep_config import load_config
from orchestrator.config.values import ConfigError
from orchestrator.report.verdicts import DEFAULT_CHANCE_MARGIN, DEFAULT_ROBUST_DROP, Thresholds
from orchestrator.run.interrupts import stop_on_sigterm
from orchestrator.run.logs import new_log_path
from trainables.choices import DATASETS
from trainables.errors import UserError
from trainables.plan import SWAP_KINDS
from trainables.store.uri import redact_secrets

MAX_LINE_CHARS = 400


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (not the usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"layerswap: error: {self.prog}: {message} (see {self.prog} --help)\n")


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or value == math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


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
    parser = OneLineParser(
        prog="layerswap", description="Which layers of a trained network matter? Sweeps of layer swaps."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="train a sweep's networks and measure every swap")
    sweep.add_argument("config", help="sweep config (YAML), e.g. configs/demo.yaml")
    sweep.add_argument("--store", help="store path or URI (overrides the config's store)")
    sweep.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    sweep.add_argument(
        "--connect-timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
        help="give up joining --address after this long (default: 60)",
    )
    sweep.add_argument("--seeds", type=int, help="use seeds 0..N-1 (overrides the config)")
    sweep.add_argument("--epochs", type=int, help="train for N epochs (overrides the config)")
    sweep.add_argument(
        "--shared-fs", action="store_true",
        help="the local store path is mounted by every node of the cluster",
    )
    sweep.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    sweep.add_argument(
        "--wandb", metavar="PROJECT",
        help="log every network to this W&B project (mode etc. from the config's wandb: block, "
        "else WANDB_MODE, WANDB_DIR, ...)",
    )

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
        "--recalibrate", type=int, metavar="N",
        help="also measure every swap with BatchNorm statistics re-estimated from N training samples "
             "(networks with BatchNorm; default: as recorded)",
    )
    analyze.add_argument(
        "--criticality", action="store_true",
        help="measure module criticality of every layer (settings as recorded, else the defaults)",
    )
    analyze.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    analyze.add_argument(
        "--connect-timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
        help="give up joining --address after this long (default: 60)",
    )
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
    data.add_argument(
        "--from", dest="archive", type=Path, metavar="FILE",
        help="import the dataset's archive fetched elsewhere (cifar10, cifar100), checked against its "
        "published MD5 first",
    )

    preflight = commands.add_parser(
        "preflight", help="check every Ray node: versions, GPUs, and a write/read/delete of the store"
    )
    preflight.add_argument("--address", help="Ray cluster to check (default: start Ray on this machine)")
    preflight.add_argument(
        "--connect-timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
        help="give up joining --address after this long (default: 60)",
    )
    preflight.add_argument("--store", help="store path or URI to probe (default: the config's store)")
    preflight.add_argument("--config", help="sweep config: compare its resources per trial with the nodes")

    verify = commands.add_parser("verify", help="check every trial's files against the store's index")
    verify.add_argument("store", help="store path or URI")
    return parser


def command_sweep(args: argparse.Namespace) -> int:
    config = load_config(args.config).with_overrides(args.store, args.seeds, args.epochs, args.wandb)
    from orchestrator.run.sweep import run_sweep  # torch and Ray: only for a valid config
    from orchestrator.wandb.settings import resolve_wandb, sync_hint

    wandb_settings = resolve_wandb(config.wandb)
    outcome = run_sweep(
        config, address=args.address, shared_fs=args.shared_fs, connect_timeout_s=args.connect_timeout
    )
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
    from trainables.store import Store, layout

    store = Store.open(config.store)
    nothing_new = outcome.completed == 0 and measured.rows == 0
    if not args.no_report and nothing_new and store.exists(f"{layout.REPORT_DIR}/report.md"):
        print(f"report: {store.path(layout.REPORT_DIR)} (up to date: nothing new was trained or measured)")
    elif not args.no_report:
        from orchestrator.report.assemble import write_report

        written = write_report(store, sweep=config.name)
        print(f"report: {written[0].rsplit('/', 1)[0]}")
        if wandb_settings is not None:
            from orchestrator.wandb.report import attach_report

            attach_report(wandb_settings, config.name, store.fs, written)
    if wandb_settings is not None and wandb_settings.mode == "offline":
        print("\n".join(sync_hint(wandb_settings, store, config.name)))
    return 0


def command_analyze(args: argparse.Namespace) -> int:
    from orchestrator.run.analyze import analyze_store
    from trainables.store import Store

    if args.draws is not None and args.draws < 1:
        raise ConfigError(f"--draws: {args.draws} is not allowed; expected an integer >= 1")
    if args.recalibrate is not None and args.recalibrate < 1:
        raise ConfigError(f"--recalibrate: {args.recalibrate} is not allowed; expected an integer >= 1")
    resources = Resources(args.cpus_per_task, args.gpus_per_task)
    outcome = analyze_store(
        Store.open(args.store), args.sweep, args.swaps, args.draws, resources, args.address, args.shared_fs,
        connect_timeout_s=args.connect_timeout,
        criticality=args.criticality,
        recalibrate=args.recalibrate,
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
    from orchestrator.report.assemble import write_report
    from trainables.store import Store

    written = write_report(
        Store.open(args.store), out_dir=args.out, sweep=args.sweep,
        thresholds=Thresholds(args.robust_drop, args.chance_margin),
    )
    for path in written:
        print(path)
    return 0


def command_ls(args: argparse.Namespace) -> int:
    from orchestrator.catalog.listing import format_listing
    from trainables.store import Store

    print(format_listing(Store.open(args.store), sweep=args.sweep))
    return 0


def command_data(args: argparse.Namespace) -> int:
    from trainables.data.datasets import prepare_dataset

    print(prepare_dataset(args.name, args.root, archive=args.archive))
    return 0


def command_preflight(args: argparse.Namespace) -> int:
    from orchestrator.run.connect import connect_ray
    from orchestrator.run.preflight import format_preflight, run_preflight
    from trainables.store import Store

    config = load_config(args.config) if args.config else None
    store = args.store or (config.store if config else None)
    if store is not None:
        Store.open(store)  # an unreachable store is refused before Ray starts
    connect_ray(args.address, args.connect_timeout)
    result = run_preflight(store, config.resources if config else None)
    print(format_preflight(result))
    return 1 if result.problems else 0


def command_verify(args: argparse.Namespace) -> int:
    from orchestrator.catalog.verify import verify_store
    from trainables.store import Store

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


def one_line(text: str) -> str:
    """``text`` as one line of at most MAX_LINE_CHARS characters, credentials redacted."""
    line = " ".join(redact_secrets(text).split())
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def write_crash_log(argv: Sequence[str]) -> Path:
    """Write the current exception's traceback (redacted) to a new log file; its path."""
    text = redact_secrets(
        f"layerswap {' '.join(argv)}\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, "
        f"python {sys.version.split()[0]}\n\n{traceback.format_exc()}"
    )
    path = new_log_path("crash")
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"layerswap: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "layerswap: interrupted; finished trials are kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # a bug: one line here, the traceback in a file
        what = one_line(f"{type(err).__name__}: {err}")
        try:
            where = f"the traceback is in {write_crash_log(argv)}"
        except OSError:
            where = "no log file could be written"
        print(f"layerswap: internal error: {what}; {where}; please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
