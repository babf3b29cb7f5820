"""The VGG family: ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` (as open_lth's ``cifar_vgg``).

Five stages of 3x3 convs (stride 1, padding 1) with ``widths[s]`` channels each
(the standard configurations A, B, D, E: :data:`VGG_CONVS_PER_STAGE`), each conv
followed by a BatchNorm (``norm: batch``; the conv then has no bias) and a ReLU;
a 2x2 max-pool after every stage but the last, global average pooling, one linear
head. Convs are numbered through the network: ``conv1`` ... ``convN`` with
``bn1`` ... ``bnN``, then ``fc``. The stages ``stage1`` ... ``stage5`` are its
layer groups (the convs between two poolings); every block is a single conv.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.models.architectures import VGG_CONVS_PER_STAGE, BuildOptions, default_widths
from trainables.models.cnn import conv_unit
from trainables.models.family import LayerGroup, ModelFamily, generic_layers
from trainables.models.functional_stack import FunctionalStack


class VGG(nn.Module):
    """``convs_per_stage[s]`` conv units of ``widths[s]`` channels per stage, pools between stages."""

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], convs_per_stage: tuple[int, ...], n_classes: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        self.stages: tuple[tuple[str, ...], ...] = ()
        index, fan_in = 1, in_channels
        for width, count in zip(widths, convs_per_stage, strict=True):
            names = []
            for _ in range(count):
                for name, module in conv_unit(index, fan_in, width, batch_norm).items():
                    self.add_module(name, module)
                names.append(f"conv{index}")
                index, fan_in = index + 1, width
            self.stages += (tuple(names),)
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.stages) - 1
        for stage, convs in enumerate(self.stages):
            for name in convs:
                x = getattr(self, name)(x)
                if self.batch_norm:
                    x = getattr(self, name.replace("conv", "bn"))(x)
                x = torch.relu(x)
            if stage < last:
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean(dim=(2, 3)))


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> VGG:
    """The VGG ``name`` for images of ``input_shape`` (C, H, W)."""
    return VGG(input_shape[0], widths, VGG_CONVS_PER_STAGE[name], n_classes, options.norm == "batch")


def groups(model: nn.Module) -> tuple[LayerGroup, ...]:
    """``stage1`` ... ``stage5``: the convs of each stage."""
    return tuple(LayerGroup(f"stage{s}", "stage", convs) for s, convs in enumerate(model.stages, start=1))


FAMILY = ModelFamily(
    models=tuple(VGG_CONVS_PER_STAGE),
    default_widths={name: default_widths(name) for name in VGG_CONVS_PER_STAGE},
    build=build,
    layers=generic_layers,
    groups=groups,
    stack=FunctionalStack.of,
)
