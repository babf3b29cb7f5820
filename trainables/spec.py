"""The training spec: every field that determines a network's weights, and nothing else.

``spec.json`` is the canonical JSON of a spec (sorted keys, separators ``,``
and ``:``, no whitespace, UTF-8) and the trial id is the first 16 hex
characters of its sha256, so the same spec always maps to the same id and a
re-run sweep skips it. What is *measured* on a network (swap kinds, draws,
alphas) is not part of its spec: see :mod:`trainables.plan`.

Fields listed in ``ALWAYS_WRITTEN`` are the spec of store version 2. A field
added to :class:`TrialSpec` later must have a default and is written only
when it differs from that default (as open_lth does), so the ids of networks
trained before it existed never change.

``config_id`` is the same hash without ``seed``: the seeds of one
configuration are the replicates that statistics pool.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

ALWAYS_WRITTEN = frozenset(
    {"dataset", "data_mean", "data_std", "model", "widths", "seed", "epochs", "batch_size",
     "optimizer", "checkpoints", "precision"}
)
"""The training spec of store version 2: these keys are always in spec.json."""

V1_MEASUREMENT_FIELDS = ("swaps", "rerandomize_draws")
"""Keys that version-1 spec.json files held; they never were training fields."""


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrialSpec:
    """One network: dataset (and its normalisation), architecture, seed, training.

    ``data_mean``/``data_std`` are the normalisation applied after scaling
    pixels to [0, 1]. ``checkpoints`` are sorted epochs, always containing 0
    and ``epochs``. ``precision`` is the training arithmetic (fp32, tf32, bf16).
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
    precision: str = "fp32"

    def canonical_fields(self) -> dict[str, Any]:
        """The fields spec.json holds: ``ALWAYS_WRITTEN``, plus later fields off their default."""
        values = dataclasses.asdict(self)
        return {
            field.name: values[field.name]
            for field in dataclasses.fields(self)
            if field.name in ALWAYS_WRITTEN or values[field.name] != field.default
        }

    def canonical_json(self) -> bytes:
        return canonical_bytes(self.canonical_fields())

    @functools.cached_property  # hashing the canonical JSON costs ~2 ms; a trial asks a dozen times
    def trial_id(self) -> str:
        return short_hash(self.canonical_json())

    @property
    def config_id(self) -> str:
        """The hash of the training spec without ``seed``: one per configuration."""
        fields = self.canonical_fields()
        del fields["seed"]
        return short_hash(canonical_bytes(fields))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """A spec from its spec.json dict; a version-1 dict's measurement keys are dropped."""
        fields = {key: value for key, value in data.items() if key not in V1_MEASUREMENT_FIELDS}
        fields["optimizer"] = OptimizerSpec(**fields["optimizer"])
        for key in ("widths", "checkpoints"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


def canonical_bytes(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that ids are hashes of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def short_hash(data: bytes) -> str:
    """The first 16 hex characters of the sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]
