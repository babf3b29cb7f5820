"""Training and measuring only what this driver claims, then waiting for what other drivers hold.

Several drivers (two sweeps with overlapping grids, a sweep and an ``analyze``) may write into one
store at once. Each network is claimed before it is trained or measured
(:mod:`trainables.store.claims`); a driver does the work it could claim, skips what another live
driver holds, and at the end waits for those: when one is released it claims it, and trains it if
nobody finished it, or measures what this driver's plan asks that it still lacks (usually nothing).
A claim whose driver died is taken over. So each network is trained once and each key measured once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from orchestrator.run.measuring import AnalysisOutcome
from orchestrator.run.missing import MeasurementJob
from orchestrator.run.progress import HEARTBEAT_SECONDS, Log, format_elapsed
from trainables.spec import TrialSpec
from trainables.store import Store
from trainables.store.claims import Claims, Holder

POLL_SECONDS = 2.0
"""How often a waiting driver looks whether the networks another driver holds are released."""


@dataclass(frozen=True)
class ClaimedOutcome:
    trained: int
    """Networks this driver trained."""
    elsewhere: int
    """Networks to train that another driver trained meanwhile."""
    measured: AnalysisOutcome


def combined(first: AnalysisOutcome, second: AnalysisOutcome) -> AnalysisOutcome:
    """Two rounds of measurement as one: counts and seconds added, tasks' times joined, ``began`` the
    earlier round's."""
    began = min((b for b in (first.began, second.began) if b), default=0.0)
    return AnalysisOutcome(
        first.networks + second.networks, first.rows + second.rows, first.failed + second.failed,
        first.wall_seconds + second.wall_seconds, first.damaged + second.damaged, began,
        first.times + second.times,
    )


def holders_line(theirs: dict[str, Holder]) -> str:
    """E.g. ``3 network(s) are held by another driver (host-a, pid 12, since 10:02:03 UTC)``."""
    drivers = sorted({str(holder) for holder in theirs.values()})
    return f"{len(theirs)} network(s) are held by another driver ({'; '.join(drivers)})"


def work_claimed(
    store: Store,
    claims: Claims,
    todo: list[TrialSpec],
    jobs: list[MeasurementJob],
    train: Callable[[list[TrialSpec]], int],
    measure: Callable[[list[MeasurementJob]], AnalysisOutcome],
    lacking: Callable[[list[TrialSpec]], list[MeasurementJob]],
    log: Log,
) -> ClaimedOutcome:
    """Train ``todo`` and run ``jobs`` (what trained networks lack), each only under this driver's
    claim; then wait for the networks other drivers hold (see the module docstring).

    ``train(specs)`` trains networks and returns how many it trained; ``measure(jobs)`` runs
    measurement jobs; ``lacking(specs)`` says what trained networks lack now.
    """
    specs = {spec.trial_id: spec for spec in todo} | {job.spec.trial_id: job.spec for job in jobs}
    planned = {job.spec.trial_id: job for job in jobs}
    to_train = {spec.trial_id for spec in todo}
    trained = 0
    measured = AnalysisOutcome(0, 0, 0, 0.0)
    waiting = list(specs)
    first_round = True
    while waiting:
        mine, theirs = claims.take(waiting)
        if theirs and first_round:
            log(f"{holders_line(theirs)}: skipped now, waited for at the end")
        if mine:
            finished = store.completed_trial_ids()
            new = [specs[i] for i in mine if i not in finished]
            done = [specs[i] for i in mine if i in finished]
            known = [planned[spec.trial_id] for spec in done if first_round and spec.trial_id in planned]
            others = [spec for spec in done if not (first_round and spec.trial_id in planned)]
            batch = known + (lacking(others) if others else [])
            if batch:
                measured = combined(measured, measure(batch))
            if new:
                trained += train(new)
            claims.release(mine)
        first_round = False
        waiting = list(theirs)
        if waiting:
            wait_for_release(claims, waiting, log)
    finished = store.completed_trial_ids()
    elsewhere = sum(trial_id in finished for trial_id in to_train) - trained
    return ClaimedOutcome(trained, max(0, elsewhere), measured)


def wait_for_release(claims: Claims, trial_ids: Iterable[str], log: Log) -> None:
    """Return once at least one of ``trial_ids`` is no longer held by a live other driver; a line
    every HEARTBEAT_SECONDS while waiting."""
    started = last_line = time.monotonic()
    ids = list(trial_ids)
    while True:
        theirs = claims.holders(ids)
        if len(theirs) < len(ids):
            return
        if time.monotonic() - last_line >= HEARTBEAT_SECONDS:
            log(f"[{format_elapsed(time.monotonic() - started)}] waiting: {holders_line(theirs)}")
            last_line = time.monotonic()
        time.sleep(POLL_SECONDS)
