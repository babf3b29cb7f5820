"""The sweep's packs, handed out to its Tune trials one at a time: a Ray actor on the driver's node.

Each Tune trial starts with a queue of packs of about equal work (planned on the driver). It asks
the board for its next pack; once its own queue is empty it takes the last pack of the queue with
the most work left, so every trial stays busy until the sweep's work runs out.

Why: Tune reuses a finished trial's worker process for the next pending trial. After a worker is
killed, the retried trial needs a new process, which takes longer to start (torch, the datasets)
than a short trial takes to run; every time a trial finished first, Tune gave its process to the
waiting trial and cancelled the new one, and the sweep ran one trial short for the rest of its
course (one at a time on two slots). With trials that do not finish while work remains, nothing
competes with the new process, and the sweep is back at full concurrency once it has started.

A trial holds one pack at a time; a trial that is retried after its worker died is handed the
same pack again (it resumes it from its Tune checkpoint). :meth:`PackBoard.stop` ends the handing
out at once (a store that refuses every write: no pack could be recorded).
"""

from __future__ import annotations


class PackBoard:
    """``queues``: per Tune trial label, the indices of its packs in order; ``costs``: each pack's work."""

    def __init__(self, queues: dict[str, list[int]], costs: list[float]) -> None:
        self.queues = {label: list(queue) for label, queue in queues.items()}
        self.costs = costs
        self.holding: dict[str, int] = {}
        self.stopped: str | None = None

    def next(self, label: str) -> int | None:
        """The pack ``label`` works on next: the one it holds (a retry), else its own queue's next, else
        the last of the queue with the most work left; None when no work is left (or after stop)."""
        if self.stopped is not None:
            return None
        if label in self.holding:
            return self.holding[label]
        queue = self.queues.get(label) or []
        if queue:
            index = queue.pop(0)
        else:
            richest = max(self.queues.values(), key=lambda q: sum(self.costs[i] for i in q), default=[])
            if not richest:
                return None
            index = richest.pop()
        self.holding[label] = index
        return index

    def done(self, label: str) -> None:
        """``label`` finished (or gave up) the pack it held."""
        self.holding.pop(label, None)

    def abandon(self, label: str, everything: bool) -> list[int]:
        """The packs lost with ``label``, a trial that failed for good: the one it held, and with
        ``everything`` (no other trial is left to take them) every pack not handed out yet."""
        lost = [self.holding.pop(label)] if label in self.holding else []
        if everything:
            for queue in self.queues.values():
                lost += queue
                queue.clear()
        return lost

    def held(self, label: str) -> int | None:
        """The pack ``label`` holds now, if any (a trial whose worker died still holds its pack)."""
        return self.holding.get(label)

    def counts(self) -> tuple[int, int]:
        """(packs held by a trial now, packs not handed out yet)."""
        return len(self.holding), sum(len(queue) for queue in self.queues.values())

    def stop(self, reason: str) -> None:
        """Hand out nothing more; ``reason`` is the one line the driver ends the sweep with."""
        if self.stopped is None:
            self.stopped = reason

    def stop_reason(self) -> str | None:
        return self.stopped
