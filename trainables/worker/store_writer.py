"""A trial's store files written by a helper thread, in order, while the trial trains and measures on.

One thread per trial process takes writes in the order they are submitted, so a
network's trial row (submitted after its other files) is still written last; a
write that raises skips the later writes of the same network (its trial row
above all) and is kept on the network's :class:`Written` handle, which the trial
settles before it reports the network done. Serialising a checkpoint (its
safetensors bytes and sha256 per tensor) happens in the thread too: the
checkpoint tensors are copies that training no longer touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from trainables.store import Store
from trainables.worker.work_times import Stopwatch, WorkTimes

Write = Callable[[Store], None]


@dataclass
class Written:
    """The writes of one network, in order; :meth:`result` waits for them and raises the first error."""

    futures: list[Future] = field(default_factory=list)
    seconds: float = 0.0
    """Seconds the helper thread spent on these writes."""
    failed: bool = False

    def result(self) -> None:
        for future in self.futures:
            future.result()


class StoreWriter:
    """Writes into ``store`` from one helper thread (``background``), or at once (not ``background``:
    :meth:`submit` writes before it returns and raises what the write raised).

    ``times`` (optional) counts what callers waited for writes (``write``).
    """

    def __init__(self, store: Store, background: bool = True, times: WorkTimes | None = None) -> None:
        self.store = store
        self.times = times
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerswap-writer") if background else None
        )
        self._pending: list[Future] = []

    def network(self) -> Written:
        """A handle for the writes of one more network."""
        return Written()

    def submit(self, written: Written, write: Write) -> None:
        """Run ``write(store)`` after everything submitted before, unless an earlier write of
        ``written`` failed."""

        def run() -> None:
            if written.failed:
                return
            started = time.perf_counter()
            try:
                write(self.store)
            except BaseException:
                written.failed = True
                raise
            finally:
                written.seconds += time.perf_counter() - started

        if self._executor is None:  # at once: an error is raised here, as a plain write's would be
            with Stopwatch(self.times, "write"):
                run()
            future: Future = Future()
            future.set_result(None)
        else:
            future = self._executor.submit(run)
            self._pending = [f for f in self._pending if not f.done()] + [future]
        written.futures.append(future)

    def settle(self, written: list[Written]) -> None:
        """Wait for the writes of ``written``; raise the first error among them."""
        with Stopwatch(self.times, "write"):
            for handle in written:
                handle.result()

    def wait(self) -> None:
        """Wait until everything submitted so far is written (or failed); raises nothing."""
        with Stopwatch(self.times, "write"):
            wait(self._pending)
        self._pending = []

    def close(self) -> None:
        """Wait for every write, then stop the helper thread."""
        self.wait()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
