"""Where a worker's time went, as it reports it to the driver (the sweep's last line sums them).

Torch-free: the driver reads these from Tune results and Ray task returns.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass


@dataclass
class WorkTimes:
    """One Tune trial's or measurement task's time, in seconds of its own wall clock.

    ``ready_at`` and ``ended_at`` are Unix times (``time.time()``): when the
    worker was ready to work (its imports done, its data on the device) and
    when it had finished. ``train``, ``measure`` and ``write`` are the seconds
    its own thread spent training, measuring, and writing store files or
    waiting for a helper thread to write them (writes that overlapped other
    work are not counted).
    """

    ready_at: float = 0.0
    ended_at: float = 0.0
    train: float = 0.0
    measure: float = 0.0
    write: float = 0.0

    def mark_ready(self) -> None:
        """The first call records now as ``ready_at``."""
        if not self.ready_at:
            self.ready_at = time.time()

    def mark_end(self) -> None:
        self.ended_at = time.time()

    @property
    def span(self) -> float:
        """Seconds from ready to end (0 until both are known)."""
        return max(0.0, self.ended_at - self.ready_at) if self.ready_at and self.ended_at else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkTimes:
        return cls(**json.loads(text))


class Stopwatch:
    """``with watch:`` adds the block's wall time to ``times.<field>``."""

    def __init__(self, times: WorkTimes | None, field: str) -> None:
        self.times, self.field = times, field

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.times is not None:
            elapsed = time.perf_counter() - self.started
            setattr(self.times, self.field, getattr(self.times, self.field) + elapsed)
