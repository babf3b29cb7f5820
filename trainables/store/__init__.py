"""The Parquet-indexed store: :class:`Store` (any pyarrow filesystem), the index schemas, the
layout of every relative path and file name, store URIs and their credentials.

``from trainables.store import Store`` is the way in. Importing this package is light:
pyarrow loads when :class:`Store` is first asked for (the CLI's ``--help`` and a refused
config never pay for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.errors import StoreError

if TYPE_CHECKING:
    from trainables.store.store import Store

__all__ = ["Store", "StoreError"]


def __getattr__(name: str) -> object:
    if name == "Store":
        from trainables.store.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
