"""The ``cnn`` family: the CPU-sized conv net for demos and tests.

Per width a 3x3 conv (stride 1, padding 1; a bias only without BatchNorm),
with ``norm: batch`` a BatchNorm, a ReLU and a 2x2 max-pool; then global average
pooling and a linear head. State_dict keys ``conv{i}.weight``, ``conv{i}.bias``
(without BN), ``bn{i}.*``, ``fc.weight``, ``fc.bias``; layers ``conv1`` ... ``convN``
(each with its BN), ``fc``. PyTorch's default initialisation throughout. It has
no groups beyond single layers (every block and stage is one conv).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.models.architectures import BuildOptions, default_widths
from trainables.models.family import ModelFamily, generic_layers
from trainables.models.functional_stack import FunctionalStack


def conv_unit(index: int, in_channels: int, out_channels: int, batch_norm: bool) -> dict[str, nn.Module]:
    """``conv{index}`` (3x3, padding 1, biased only without BN) and, with BN, ``bn{index}``."""
    modules: dict[str, nn.Module] = {
        f"conv{index}": nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)
    }
    if batch_norm:
        modules[f"bn{index}"] = nn.BatchNorm2d(out_channels)
    return modules


class ConvNet(nn.Module):
    """``len(widths)`` conv units, each followed by a 2x2 max-pool, global average pooling, ``fc``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], n_classes: int, batch_norm: bool) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        self.n_convs = len(widths)
        for index, (fan_in, fan_out) in enumerate(zip((in_channels, *widths), widths, strict=False), start=1):
            for name, module in conv_unit(index, fan_in, fan_out, batch_norm).items():
                self.add_module(name, module)
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.n_convs + 1):
            x = getattr(self, f"conv{index}")(x)
            if self.batch_norm:
                x = getattr(self, f"bn{index}")(x)
            x = F.max_pool2d(torch.relu(x), 2)
        return self.fc(x.mean(dim=(2, 3)))


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> ConvNet:
    """A :class:`ConvNet` for images of ``input_shape`` (C, H, W)."""
    return ConvNet(input_shape[0], widths, n_classes, options.norm == "batch")


FAMILY = ModelFamily(
    models=("cnn",),
    default_widths={"cnn": default_widths("cnn")},
    build=build,
    layers=generic_layers,
    stack=FunctionalStack.of,
)
