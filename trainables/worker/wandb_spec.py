"""The W&B settings every worker's run uses, in a module of their own: the driver resolves them
before it imports torch (:mod:`trainables.worker.wandb_log` logs with them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WandbSpec:
    """W&B settings as resolved on the driver: what every worker's run uses.

    ``mode`` is online or offline. ``dir`` is an absolute folder on the
    driver's Ray node ``home_node`` ("" = whatever node runs this); W&B writes
    runs to ``<dir>/wandb/``. The settings reach workers through Ray's object
store, never in a trial config that Tune writes to disk (``api_key``).
    """

    mode: str
    dir: str
    project: str | None = None
    entity: str | None = None
    tags: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    home_node: str = ""
    init_timeout_seconds: float = 60.0
