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
import gc
import math
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from orchestrator.config.blocks import Resources
from orchestrator.config.sweep_config import load_config
from orchestrator.config.values import ConfigError
from orchestrator.report.verdicts import DEFAULT_CHANCE_MARGIN, DEFAULT_ROBUST_DROP, Thresholds
from orchestrator.run.interrupts import stop_on_sigterm
from orchestrator.run.logs import new_log_path
from orchestrator.run.phases import Phases
from trainables.choices import DATASETS
from trainables.errors import UserError
from trainables.plan import GROUP_LEVELS, SWAP_KINDS, CriticalitySettings, ordered_groups
from trainables.store.uri import redact_secrets

if TYPE_CHECKING:
    from orchestrator.run.connect import LeavingRay
    from trainables.store import Store

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


def group_levels(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated group levels, ``layer`` always among them."""
    levels = [level.strip() for level in text.split(",") if level.strip()]
    unknown = [level for level in levels if level not in GROUP_LEVELS]
    if unknown or not levels:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed levels are {', '.join(GROUP_LEVELS)}")
    return ordered_groups(levels)


def criticality_block(text: str) -> CriticalitySettings:
    """An argparse type: a criticality block as in a config, a YAML mapping with or without its
    braces, e.g. ``search: grid, sigma_max: 0.01``."""
    import yaml

    from orchestrator.config.blocks import parse_criticality
    from orchestrator.config.yaml_loader import load_yaml

    braced = text if text.strip().startswith("{") else "{" + text + "}"
    try:
        value = load_yaml(braced.encode("utf-8", "surrogatepass"))
    except (yaml.YAMLError, ValueError):  # not YAML, or refused by the guarded loader
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a mapping such as 'search: grid, sigmas: 11'")
    try:
        return parse_criticality(value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    sweep.add_argument(
        "--no-report", action="store_true", help="do not rebuild STORE/report at the end (when it is stale)"
    )
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
        "--groups", type=group_levels, metavar="LEVELS",
        help="also measure groups of layers swapped together: comma-separated block (residual "
             "blocks), stage (resolution stages); default: as recorded",
    )
    analyze.add_argument(
        "--recalibrate", type=int, metavar="N",
        help="also measure every swap with BatchNorm statistics re-estimated from N training samples "
             "(networks with BatchNorm; default: as recorded)",
    )
    analyze.add_argument(
        "--criticality", nargs="?", const=True, default=False, type=criticality_block, metavar="SETTINGS",
        help="measure module criticality of every layer: with the settings recorded, else the defaults, "
        "or with SETTINGS, the config's criticality block (e.g. 'search: grid, sigma_max: 0.01')",
    )
    analyze.add_argument("--address", help="Ray cluster to join (default: start Ray on this machine)")
    analyze.add_argument(
        "--connect-timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
        help="give up joining --address after this long (default: 60)",
    )
    analyze.add_argument("--shared-fs", action="store_true",
                         help="the local store path is mounted by every node of the cluster")
    analyze.add_argument("--no-report", action="store_true", help="do not rebuild STORE/report at the end")
    analyze.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per network measured")
    analyze.add_argument("--gpus-per-task", type=float, default=0.0, help="GPU share per network measured")

    report = commands.add_parser(
        "report", help="rebuild STORE/report (every sweep), or write a copy or one sweep's report to --out"
    )
    report.add_argument("store", help="store path or URI")
    report.add_argument("--out", help="output directory (default: STORE/report, which covers every sweep)")
    report.add_argument("--sweep", help="only this sweep (needs --out)")
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

    verify = commands.add_parser(
        "verify", help="check every trial's files against the store's index (exit 2 when it finds problems)"
    )
    verify.add_argument("store", help="store path or URI")
    verify.add_argument(
        "--repair", action="store_true",
        help="collapse keys stored twice into one new file and delete rows measured later from weights "
        "that do not match their index (then check again)",
    )
    return parser


def command_sweep(args: argparse.Namespace) -> int:
    phases = Phases()  # from the command's start
    config = load_config(args.config).with_overrides(args.store, args.seeds, args.epochs, args.wandb)
    from orchestrator.run.sweep import run_sweep  # torch and Ray: only for a valid config
    from orchestrator.wandb.settings import resolve_wandb, sync_hint

    wandb_settings = resolve_wandb(config.wandb)
    outcome = run_sweep(
        config, address=args.address, shared_fs=args.shared_fs, connect_timeout_s=args.connect_timeout,
        phases=phases, meanwhile=None if args.no_report else import_report,
    )
    measured = outcome.measured
    elsewhere = f"{outcome.elsewhere} trained by another driver, " if outcome.elsewhere else ""
    summary = (
        f"sweep {config.name}: {outcome.completed} trained, {outcome.skipped} skipped "
        f"(already trained), {elsewhere}{outcome.failed} failed; {measured.networks} measured "
        f"({measured.rows} new rows), {measured.failed} failed"
    )
    print(f"store: {outcome.store_uri}")
    from orchestrator.run.connect import LeavingRay
    from trainables.store import Store

    leaving = LeavingRay(outcome.connected_here)  # Ray stops while the report is built
    store = Store.open(config.store)
    written = [] if args.no_report else refresh_report_line(store, phases)  # what failed is missing from it
    if outcome.failed or measured.failed:
        stop_ray(leaving, phases)
        print(f"{summary}; {phases.line()}")
        return report_failures(outcome.failed + measured.failed, measured.damaged, outcome.store_uri)
    if written and wandb_settings is not None:
        from orchestrator.wandb.report import attach_report

        attach_report(wandb_settings, config.name, store.fs, written)
    if wandb_settings is not None and wandb_settings.mode == "offline":
        print("\n".join(sync_hint(wandb_settings, store, config.name)))
    stop_ray(leaving, phases)
    print(f"{summary}; {phases.line()}")
    return 0


def refresh_report_line(store: Store, phases: Phases) -> list[str]:
    """Rebuild STORE/report unless it is current, print one ``report:`` line (its time counts as
    report); the paths written."""
    from orchestrator.report.assemble import ReportError, refresh_report

    try:
        refreshed = refresh_report(store)
    except ReportError as err:
        print(f"report: not written ({err})")
        return []
    finally:
        phases.lap("report")
    current = "" if refreshed.written else " (up to date: built from the store's index as it is now)"
    print(f"report: {refreshed.location}{current}")
    return refreshed.written


def import_report() -> None:
    """Import the report's modules (pandas, matplotlib): run while the networks train."""
    import orchestrator.report.assemble  # noqa: F401


def stop_ray(leaving: LeavingRay, phases: Phases) -> None:
    """Wait until this command has left the Ray it started or joined, before its last line (what is
    left of that after the report counts as ray)."""
    leaving.wait()
    phases.lap("ray")


def command_analyze(args: argparse.Namespace) -> int:
    phases = Phases()
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
        phases=phases,
        recalibrate=args.recalibrate,
        groups=args.groups,
    )
    from orchestrator.run.connect import LeavingRay

    leaving = LeavingRay(outcome.connected_here)  # Ray stops while the report is built
    if not args.no_report:
        refresh_report_line(Store.open(args.store), phases)
    stop_ray(leaving, phases)
    print(
        f"analyze: {outcome.networks} networks measured ({outcome.rows} new rows), "
        f"{outcome.failed} failed, {phases.line()}"
    )
    if outcome.failed:
        return report_failures(outcome.failed, outcome.damaged, args.store)
    return 0


def report_failures(failed: int, damaged: int, store: str) -> int:
    """The last line of a run in which ``failed`` networks failed, ``damaged`` of them because a weights
    file does not match its index, and the exit status: 2 when only damaged weights failed (running
    again cannot mend them), else 1."""
    parts = []
    if damaged:
        parts.append(
            f"{damaged} network(s) not measured: a weights file does not match index/weights (named "
            f"above); `layerswap verify {redact_secrets(store)}` lists every damaged file"
        )
    if failed > damaged:
        parts.append(f"{failed - damaged} networks failed; run the same command again to retry them")
    print(f"layerswap: error: {'; '.join(parts)}", file=sys.stderr)
    return 1 if failed > damaged else 2


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

    store = Store.open(args.store)
    result = verify_store(store)
    for problem in result.problems:
        print(problem)
    if args.repair and (result.duplicates or result.damaged_epochs):
        from orchestrator.catalog.repair import repair_store

        for line in repair_store(store, result):
            print(line)
        result = verify_store(store)
        for problem in result.problems:
            print(f"after repair: {problem}")
    if result.problems:
        trials = len({problem.trial_id for problem in result.problems})
        after = " after repair" if args.repair else ""
        print(f"layerswap: error: {len(result.problems)} problem(s) in {trials} of {result.trials} trials"
              f"{after}", file=sys.stderr)
        return 2
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


def program() -> NoReturn:
    """The ``layerswap`` program: :func:`main`, then the exit, without the last garbage collection.

    Python's finalisation collects every object once more before it exits; after a sweep (torch,
    Ray Tune, pandas and matplotlib imported) that took 3-4 s of the user's wait after the last
    line. Frozen objects are left to the exit, as the memory of an ending process is. Only the
    program does this: :func:`main` called in a process that goes on (a test, a notebook) does not.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    program()
