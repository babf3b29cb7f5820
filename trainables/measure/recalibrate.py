"""Re-estimating every BatchNorm's running statistics of a swapped network before it is evaluated.

The measurement setting ``recalibrate: N`` (DESIGN.md, "BatchNorm in swaps"):
each BatchNorm's ``running_mean`` and ``running_var`` are reset (0 and 1) and
re-estimated from the first N training samples of a fixed seeded order
(``derive_seed("recalibrate", seed)``), by train-mode forward passes without
gradient with ``momentum=None``: the cumulative average of the per-batch
statistics (PyTorch's definition), in ceil(N / ``batch_size``) batches of
nearly equal size (the network's training ``batch_size`` at most; sizes differ
by at most one, so no tail batch of a single sample, which a BatchNorm after a
linear layer cannot normalise in train mode). Every
other tensor is the variant's, ``num_batches_tracked`` included (it stays the
base network's). The variant's own tensors are never written to: they are
shared with the stored checkpoints.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call

from trainables.models.family import StateDict
from trainables.seeding import derive_seed

BATCHNORMS = nn.modules.batchnorm._BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm module (only those are recalibrated)."""
    return any(isinstance(module, BATCHNORMS) for module in model.modules())


def recalibration_samples(x_train: torch.Tensor, seed: int, n: int) -> torch.Tensor:
    """The first ``n`` training samples of the order drawn from ``derive_seed("recalibrate", seed)``."""
    generator = torch.Generator().manual_seed(derive_seed("recalibrate", seed))
    order = torch.randperm(x_train.shape[0], generator=generator)[:n]
    return x_train[order.to(x_train.device)]


def recalibrated(model: nn.Module, variant: StateDict, samples: torch.Tensor, batch: int) -> StateDict:
    """``variant`` with each BatchNorm's running statistics re-estimated on ``samples``.

    ``model`` gives the structure (any device, the meta device included); the
    forward passes run on ``samples``' device with ``variant``'s tensors.
    """
    structure = copy.deepcopy(model)
    statistics: StateDict = {}
    for path, module in structure.named_modules():
        if isinstance(module, BATCHNORMS) and module.track_running_stats:
            module.momentum = None
            prefix = f"{path}." if path else ""
            for name, fresh in (("running_mean", torch.zeros_like), ("running_var", torch.ones_like),
                                ("num_batches_tracked", torch.zeros_like)):
                statistics[prefix + name] = fresh(variant[prefix + name])
    state = {**variant, **statistics}
    structure.train()
    with torch.no_grad():
        for chunk in samples.tensor_split(math.ceil(samples.shape[0] / batch)):
            functional_call(structure, state, (chunk,))
    counters = {key: variant[key] for key in statistics if key.endswith("num_batches_tracked")}
    return {**state, **counters}
