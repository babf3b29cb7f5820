"""W&B settings of a sweep, in a module that imports nothing heavy (the config parser uses it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WandbSpec:
    """Where runs go. ``dir`` None = the trial's own folder (Tune keeps it)."""

    project: str
    mode: str = "online"
    entity: str | None = None
    dir: str | None = None
    init_timeout_seconds: float = 60.0


def wandb_spec_from_dict(data: dict | None) -> WandbSpec | None:
    return WandbSpec(**data) if data else None


def wandb_spec_to_dict(settings: WandbSpec | None) -> dict | None:
    return asdict(settings) if settings else None
