"""The trial spec: every field that changes a trained network or its swap table.

``spec.json`` is the canonical JSON of a spec (sorted keys, no whitespace,
UTF-8) and the trial id is the first 16 hex characters of its sha256, so the
same spec always maps to the same id and a re-run sweep skips it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

SWAP_KINDS = ("reinit", "rerandomize", "transplant")
"""Swap kinds a sweep may ask for; ``none`` (the baselines) is always measured."""


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrialSpec:
    """One network: dataset, architecture, seed, training and swap plan.

    ``data_mean``/``data_std`` are the normalisation applied after scaling
    pixels to [0, 1]. ``checkpoints`` are sorted epochs, always containing 0
    and ``epochs``. ``rerandomize_draws`` is how many fresh draws per layer.
    """

    dataset: str
    data_mean: float
    data_std: float
    model: str
    widths: tuple[int, ...]
    seed: int
    epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    checkpoints: tuple[int, ...]
    swaps: tuple[str, ...]
    rerandomize_draws: int = 1
    precision: str = "fp32"

    def canonical_json(self) -> bytes:
        return json.dumps(
            asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @functools.cached_property  # hashing the canonical JSON costs ~2 ms; a trial asks a dozen times
    def trial_id(self) -> str:
        return hashlib.sha256(self.canonical_json()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        fields = dict(data)
        fields["optimizer"] = OptimizerSpec(**fields["optimizer"])
        for key in ("widths", "checkpoints", "swaps"):
            fields[key] = tuple(fields[key])
        return cls(**fields)
