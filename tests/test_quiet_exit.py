"""A worker Ray stops with SIGTERM prints no traceback for it (trainables/worker/quiet_exit.py).

Ray's SIGTERM handler raises SystemExit; landing in a finalizer or a weakref
callback, Python reports it as "Exception ignored in ..." with a traceback, which
a driver joined to a cluster printed at the end of a sweep (seen in CI). The
SIGTERM's timing cannot be chosen, so a finalizer raises SystemExit here, in a
real Ray worker, beside one that raises a real error.
"""

from __future__ import annotations

import io
import sys

import ray


class Stops:
    def __del__(self) -> None:
        raise SystemExit(1)


class Breaks:
    def __del__(self) -> None:
        raise ValueError("a finalizer's own bug")


@ray.remote(num_cpus=1)
def printed_by_finalizers(quiet: bool) -> str:
    """What this worker prints when a finalizer raises SystemExit and another a ValueError."""
    from trainables.worker.quiet_exit import quiet_stops

    sys.unraisablehook = sys.__unraisablehook__  # this worker may have run a trial before
    if quiet:
        quiet_stops()
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        Stops()  # each dies at once; its finalizer's exception cannot be raised to anyone
        Breaks()
        return sys.stderr.getvalue()
    finally:
        sys.stderr = stderr


def test_a_worker_prints_no_report_of_being_stopped_and_every_other_one(local_ray):
    loud, quiet = ray.get([printed_by_finalizers.remote(False), printed_by_finalizers.remote(True)])
    assert "SystemExit" in loud and "a finalizer's own bug" in loud  # Python's own reports
    assert "SystemExit" not in quiet and "Stops.__del__" not in quiet
    assert "ValueError: a finalizer's own bug" in quiet and "Traceback" in quiet
