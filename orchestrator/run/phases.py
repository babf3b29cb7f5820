"""Where a command's wall time went: consecutive phases from the command's start, for its last line.

``in 6.2 s: plan 1.9, ray 0.4, workers 2.1, training 0.3, measuring 0.2, writing 0.1, report 0.7,
the rest 0.5``. The driver's time is cut into consecutive laps, each named for what it
waited on: ``plan`` (imports, the config, the store, the dataset, the grid, the
memory check; Ray starts meanwhile), ``ray`` (what was left of Ray's start, or
joining a cluster, and what leaving Ray took beyond the report, built meanwhile),
``workers`` (until the first worker was ready: its process started and imported
torch, its data on the device), ``training``, ``measuring`` and ``writing`` (the
workers' own measured seconds, divided by how many ran at once), ``report``;
``the rest`` is what no phase names (Tune's and Ray's bookkeeping, the workers'
own between the phases, Tune's end).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from trainables.worker.work_times import WorkTimes


def command_started() -> float:
    """When this process started, on the ``time.monotonic()`` clock (Linux: from /proc, to 10 ms;
    elsewhere: now)."""
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot
    except (OSError, ValueError, IndexError, AttributeError):
        age = 0.0
    return time.monotonic() - max(0.0, age)


class Phases:
    """Laps of the driver's time since ``started`` (``time.monotonic()``), by name, in order."""

    def __init__(self, started: float | None = None) -> None:
        self.started = command_started() if started is None else started
        self.last = self.started
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    def lap(self, name: str) -> float:
        """Count the time since the previous lap as ``name``; the seconds counted."""
        now = time.monotonic()
        elapsed, self.last = now - self.last, now
        self.add(name, elapsed)
        return elapsed

    def lap_work(self, began: float, times: Iterable[WorkTimes]) -> None:
        """Count the time since the previous lap, spent on workers that began being started at
        ``began`` (Unix time), as ``workers``, ``training``, ``measuring`` and ``writing`` by
        what they measured (:func:`split_work`); what is left stays for ``the rest``."""
        now = time.monotonic()
        elapsed, self.last = now - self.last, now
        for name, seconds in split_work(elapsed, time.time() - elapsed, began, list(times)).items():
            self.add(name, seconds)

    @property
    def total(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        """``in 6.2 s: plan 1.9, ..., the rest 0.5`` (phases under 0.05 s left out)."""
        total = self.total
        parts = [f"{name} {seconds:.1f}" for name, seconds in self.seconds.items() if seconds >= 0.05]
        rest = total - sum(self.seconds.values())
        if rest >= 0.05:
            parts.append(f"the rest {rest:.1f}")
        return f"in {total:.1f} s" + (f": {', '.join(parts)}" if parts else "")


def split_work(elapsed: float, lap_began: float, began: float, times: list[WorkTimes]) -> dict[str, float]:
    """``elapsed`` seconds of a lap that began at ``lap_began`` (Unix time), in which workers began
    being started at ``began`` and reported ``times``: seconds per phase.

    ``workers``: from ``began`` until the first worker was ready. After that,
    each worker's training, measuring and writing seconds, summed over the
    workers and scaled by the wall time after the first was ready over their
    summed spans (so divided by how many ran at once), never more in all than
    that wall time.
    """
    ready = [t.ready_at for t in times if t.ready_at]
    if not ready or elapsed <= 0:
        return {}
    lap_end = lap_began + elapsed
    start = min(max(began, lap_began), lap_end)
    first_ready = min(max(min(ready), start), lap_end)
    left = lap_end - first_ready
    work = {
        "training": sum(t.train for t in times),
        "measuring": sum(t.measure for t in times),
        "writing": sum(t.write for t in times),
    }
    spans = sum(t.span for t in times)
    scale = min(1.0, left / spans) if spans > 0 else 0.0
    counted = sum(work.values()) * scale
    if counted > left:
        scale *= left / counted
    return {"workers": first_ready - start, **{name: seconds * scale for name, seconds in work.items()}}
