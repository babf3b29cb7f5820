"""The driver side: sweep configs and their grid, launching on Ray (local or a cluster),
measurement jobs, statistics and the report, listing and verifying stores, W&B settings, the
Python API (``from orchestrator import open_store``: :mod:`orchestrator.api`), the ``layerswap`` CLI.

Importing this package is light (no torch, Ray or pyarrow): the CLI validates a config at once,
and ``open_store`` loads what it needs when first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.api import open_store

__all__ = ["open_store"]


def __getattr__(name: str) -> object:
    if name == "open_store":
        from orchestrator.api import open_store

        return open_store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
