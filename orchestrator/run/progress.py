"""Progress lines, one vocabulary for training (Tune trials) and measuring (Ray tasks).

Every line is ``[h:mm:ss] <verb> <done>/<total>, <counts> | <label> <what happened>``:
the verb says what is counted (``done`` networks trained, ``measured`` networks
measured), the counts are what the caller knows (running, pending, failed), and
after the bar one thing that happened to one unit of work: it finished (with a
result), it failed (with its error line), or it failed and is retried. A
heartbeat, the counts alone, comes when nothing was said for
:data:`HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]
"""Where progress lines go (``print_line`` by default; tests collect them)."""

HEARTBEAT_SECONDS = 30.0
"""A line at least this often while work runs, even when nothing finished."""


def print_line(line: str) -> None:
    """The default progress sink: ``print`` looked up at call time.

    Tune pickles its callbacks; a reference to ``builtins.print`` taken
    earlier fails to pickle once Ray has replaced ``print`` (it does when it
    forwards worker output), and a module function pickles by name.
    """
    print(line, flush=True)


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def finished(label: str, result: str) -> str:
    """What follows the bar when a unit of work finished: ``<label> <result>``."""
    return f"{label} {result}"


def failed(label: str, error: str, networks: int | None = None) -> str:
    """What follows the bar when a unit of work failed for good (``networks``: how many it held)."""
    held = f" ({networks} networks)" if networks is not None else ""
    return f"{label} FAILED{held}: {error}"


def retrying(label: str) -> str:
    """What follows the bar when a unit of work failed and is run again."""
    return f"{label} failed, retrying"


def lost(node: str, label: str) -> str:
    """What follows the bar when the worker running a unit of work died (killed, out of memory, its
    node gone) and the work is run again: ``worker lost on <node>; retrying <label>``."""
    return f"worker lost on {node}; retrying {label}"


class ProgressLog:
    """Counts of one kind of work and the lines that report them.

    ``verb`` names what ``done`` counts (``done``, ``measured``); ``total`` the
    units of work expected. Callers add to ``done`` and ``failed`` and pass the
    counts only they know (``running``, ``pending``) to each line.
    """

    def __init__(self, verb: str, total: int, log: Log) -> None:
        self.verb = verb
        self.total = total
        self.log = log
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.failed = 0

    def status(self, running: int | None = None, pending: int | None = None) -> str:
        """``[h:mm:ss] <verb> <done>/<total>[, running R][, pending P], failed F``."""
        counts = [f"{self.verb} {self.done}/{self.total}"]
        counts += [f"{name} {value}" for name, value in (("running", running), ("pending", pending))
                   if value is not None]
        counts.append(f"failed {self.failed}")
        return f"[{format_elapsed(time.monotonic() - self.started)}] {', '.join(counts)}"

    def line(self, event: str | None = None, running: int | None = None, pending: int | None = None) -> None:
        """One line: the counts, then the ``event`` (from :func:`finished`, :func:`failed`,
        :func:`retrying`) if there is one."""
        status = self.status(running, pending)
        self.log(f"{status} | {event}" if event else status)
        self.last_line = time.monotonic()

    @property
    def heartbeat_due(self) -> bool:
        return time.monotonic() - self.last_line >= HEARTBEAT_SECONDS
