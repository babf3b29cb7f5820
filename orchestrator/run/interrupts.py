"""SIGTERM stops the driver as Ctrl-C does: a KeyboardInterrupt the CLI turns into one line.

Ray's ``ray.init`` installs its own SIGTERM handler in the driver, so the CLI
installs this one at start and :func:`orchestrator.run.connect.connect_ray`
installs it again once Ray is up.
"""

from __future__ import annotations

import signal
import threading


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (no-op in other threads)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
