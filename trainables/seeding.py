"""Seeds derived from a trial's seed, one independent stream per purpose."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of ``parts`` joined by ``:``.

    ``derive_seed("shuffle", 3)`` and ``derive_seed("rerandomize", 3, "fc1", 0)``
    give unrelated streams, stable across processes, machines and versions.
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
