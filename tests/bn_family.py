"""A second model family for tests: a tiny conv net with a BatchNorm and no fast path of its own.

Registered as ``model: tinybn`` by the ``tinybn`` fixture of tests/test_families.py,
so that everything generic (the layer rule, functional evaluation, the noise
loss, the fresh draw, the footprint) runs on a network unlike the MLP. A
sample of 20 features (the synthetic dataset's) is viewed as a 1x4x5 image.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.models.architectures import BuildOptions
from trainables.models.family import ModelFamily, generic_layers


class TinyBN(nn.Module):
    """3x3 conv (``widths[0]`` channels) + BatchNorm + ReLU, global average pool, linear head ``fc``."""

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.reshape(x.shape[0], 1, 4, -1))))
        return self.fc(h.mean(dim=(2, 3)))


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> TinyBN:
    if math.prod(input_shape) % 4:
        raise ValueError(f"tinybn: a sample of {input_shape} does not fill 4 rows")
    return TinyBN(widths[0], n_classes)


FAMILY = ModelFamily(models=("tinybn",), default_widths={"tinybn": (6,)}, build=build, layers=generic_layers)
