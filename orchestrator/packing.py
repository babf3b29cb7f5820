"""Grouping a sweep's networks into packs: seeds of one width config trained in one trial."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from orchestrator.config import ConfigError, SweepConfig
from trainables.datasets import DatasetArrays
from trainables.packed import (
    CUDA_CONTEXT_BYTES,
    check_memory_fits,
    default_pack_size,
    estimate_trial_memory_bytes,
)
from trainables.spec import OptimizerSpec, TrialSpec


def pack_size(config: SweepConfig, widths: tuple[int, ...], data: DatasetArrays) -> int:
    """``config.pack``, or for ``auto`` the size :func:`default_pack_size` picks.

    For GPU trials ``auto`` needs a GPU visible here (the driver) to read its
    memory; without one (a CPU head node) it is 1: set ``pack`` explicitly.
    """
    if config.pack:
        return config.pack
    gpu_share = config.resources.gpu_per_trial
    if gpu_share > 0 and not torch.cuda.is_available():
        return 1
    device = torch.device("cuda", 0) if gpu_share > 0 else torch.device("cpu")
    return default_pack_size(
        widths, device, data.n_features, data.n_classes, len(data.y_train), len(data.y_test),
        config.batch_size, len(config.checkpoints), min(gpu_share, 1.0) or 1.0,
        max(1, int(config.resources.cpu_per_trial)),
    )


def optimizer_slots(optimizer: OptimizerSpec) -> int:
    """Tensors the optimizer keeps per parameter: Adam 2, SGD with momentum 1, plain SGD 0."""
    if optimizer.name == "adam":
        return 2
    return 1 if optimizer.momentum else 0


def check_gpu_memory(config: SweepConfig, widths: tuple[int, ...], pack: int, data: DatasetArrays) -> None:
    """Refuse packs whose estimated peak memory exceeds their share of this machine's GPU."""
    share = config.resources.gpu_per_trial
    if share <= 0 or not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    need = CUDA_CONTEXT_BYTES + estimate_trial_memory_bytes(
        widths, data.n_features, data.n_classes, len(data.y_train), len(data.y_test),
        config.batch_size, pack, len(config.checkpoints), optimizer_slots(config.optimizer),
    )
    what = f"resources.gpu_per_trial: {share} (a pack of {pack}, widths {list(widths)})"
    try:
        check_memory_fits(need, int(min(share, 1.0) * total), what)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def make_packs(
    config: SweepConfig,
    todo: list[TrialSpec],
    data: DatasetArrays,
    slots: int,
    log: Callable[[str], None],
) -> list[list[TrialSpec]]:
    """Consecutive seeds of each width config in packs of :func:`pack_size`.

    With ``pack: auto`` a pack holds at most ``ceil(networks / (2 * slots))``
    networks (``slots``: trials the cluster runs at once), so there are at
    least two trials per slot and one slow pack does not leave the others idle.
    """
    cap = math.ceil(len(todo) / (2 * max(1, slots))) if not config.pack else len(todo)
    packs: list[list[TrialSpec]] = []
    for widths in config.widths:
        specs = [spec for spec in todo if spec.widths == widths]
        if not specs:
            continue
        size = max(1, min(pack_size(config, widths, data), len(specs), cap))
        check_gpu_memory(config, widths, size, data)
        log(f"widths {'-'.join(map(str, widths))}: {len(specs)} networks, {size} per trial")
        packs.extend(specs[i : i + size] for i in range(0, len(specs), size))
    return packs
