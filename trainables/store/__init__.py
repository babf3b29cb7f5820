"""The Parquet-indexed store: :class:`Store` (any pyarrow filesystem), the index schemas, the
layout of every relative path and file name, store URIs and their credentials.

``from trainables.store import Store`` is the way in.
"""

from trainables.store.store import Store, StoreError

__all__ = ["Store", "StoreError"]
