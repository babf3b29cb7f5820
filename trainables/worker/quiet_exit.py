"""A worker told to stop prints no traceback for it.

Ray stops a worker with SIGTERM (Tune, when a trial ends and its placement
group is removed; the raylet, when the job ends), and its handler raises
``SystemExit``. When that lands while the worker's main thread runs a finalizer
or a weakref callback (a ``WeakSet`` forgetting a finished thread), Python cannot
raise it there and prints it as "Exception ignored in ... SystemExit: 1" with a
traceback, which a driver joined to a cluster shows on its terminal; the worker
exits all the same. :func:`quiet_stops` drops exactly those reports and leaves
every other unraisable exception to Python's own hook.
"""

from __future__ import annotations

import sys
from typing import Any


def _report_unless_stopped(unraisable: Any) -> None:
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def quiet_stops() -> None:
    """From now on, this process prints no report of a ``SystemExit`` it could not raise."""
    sys.unraisablehook = _report_unless_stopped
