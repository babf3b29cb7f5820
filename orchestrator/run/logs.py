"""Where the CLI writes what does not belong on the terminal: crash tracebacks, Ray's connect chatter."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

LOG_DIR_ENV = "LAYERSWAP_LOG_DIR"
"""Directory for log files (default ``~/.cache/layerswap/logs``, else the system's temp directory)."""


def new_log_path(kind: str) -> Path:
    """A fresh ``<kind>-<UTC time>-<pid>.log`` path in the first log directory that can be created."""
    name = f"{kind}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{os.getpid()}.log"
    candidates = [Path(os.environ.get(LOG_DIR_ENV) or Path.home() / ".cache" / "layerswap" / "logs")]
    candidates.append(Path(tempfile.gettempdir()))
    for directory in candidates:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory / name
    raise OSError("no writable directory for a log file")
