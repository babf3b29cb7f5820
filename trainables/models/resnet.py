"""Basic-block ResNets with torchvision's state_dict keys: ``resnet18`` and ``resnet34`` here (a 3x3
stride-1 stem for 32x32 inputs), and the network the CIFAR ResNets of
:mod:`trainables.models.cifar_resnet` are built with.

A 3x3 stem conv (``conv1``, ``bn1``), then stage ``s`` = ``layer{s}``: basic blocks
``layer{s}.{b}`` of two 3x3 convs (``conv1``/``bn1``, ``conv2``/``bn2``) with
``widths[s-1]`` channels; the first block of every stage but the first has
stride 2, and a block whose input differs from its output in size or channels has
a 1x1 conv + BN shortcut ``downsample.0``/``downsample.1``; global average pooling
and a linear head ``fc``. With ``norm: batch`` the convs have no bias; with
``norm: none`` there is no BN and every conv has a bias. PyTorch's default
initialisation throughout (not torchvision's Kaiming init).

Layers in forward order: ``conv1``, ``layer1.0.conv1``, ``layer1.0.conv2``, ...,
``layer2.0.downsample`` (the shortcut's conv and BN), ..., ``fc``. Groups: every
block ``layer{s}.{b}`` and every stage ``layer{s}``.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.architectures import RESNET_BLOCKS, BuildOptions, blocks_per_stage, default_widths
from trainables.models.family import Layer, LayerGroup, ModelFamily, generic_layers
from trainables.models.functional_stack import FunctionalStack


def norm_layer(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs and the shortcut, added before the last ReLU (He et al. 2016)."""

    def __init__(self, in_channels: int, channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=not batch_norm)
        self.bn1 = norm_layer(channels, batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm_layer(channels, batch_norm)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            shortcut = [nn.Conv2d(in_channels, channels, 1, stride, bias=not batch_norm)]
            self.downsample = nn.Sequential(*shortcut, *([nn.BatchNorm2d(channels)] if batch_norm else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet(nn.Module):
    """Stem, ``len(widths)`` stages of ``blocks[s]`` basic blocks, global average pooling, ``fc``."""

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], n_classes: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm)
        self.bn1 = norm_layer(widths[0], batch_norm)
        self.n_stages = len(widths)
        fan_in = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            stride = 1 if stage == 1 else 2
            units = [BasicBlock(fan_in if b == 0 else width, width, stride if b == 0 else 1, batch_norm)
                     for b in range(count)]
            self.add_module(f"layer{stage}", nn.Sequential(*units))
            fan_in = width
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> ResNet:
    """The ResNet ``name`` for images of ``input_shape`` (C, H, W)."""
    return ResNet(input_shape[0], widths, blocks_per_stage(name), n_classes, options.norm == "batch")


def layers(model: nn.Module) -> tuple[Layer, ...]:
    """The generic layers, each shortcut named for its block (``layer2.0.downsample``, not ``.0``)."""
    found = []
    for layer in generic_layers(model):
        path, _, position = layer.name.rpartition(".")
        if path.endswith(".downsample") and position == "0":
            layer = Layer(path, layer.index, layer.module_type, layer.modules, layer.parameters,
                          layer.buffers)
        found.append(layer)
    return tuple(found)


def groups(model: nn.Module) -> tuple[LayerGroup, ...]:
    """Every block ``layer{s}.{b}`` and after each stage's blocks the stage ``layer{s}``, in forward order."""
    names = [layer.name for layer in layers(model)]
    found: list[LayerGroup] = []
    for stage in range(1, model.n_stages + 1):
        prefix = f"layer{stage}"
        for block in range(len(model.get_submodule(prefix))):
            block_prefix = f"{prefix}.{block}."
            found.append(LayerGroup(f"{prefix}.{block}", "block",
                                    tuple(n for n in names if n.startswith(block_prefix))))
        found.append(LayerGroup(prefix, "stage", tuple(n for n in names if n.startswith(f"{prefix}."))))
    return tuple(found)


def family(models: tuple[str, ...]) -> ModelFamily:
    """A ResNet family answering to ``models``."""
    return ModelFamily(
        models=models,
        default_widths={name: default_widths(name) for name in models},
        build=build,
        layers=layers,
        groups=groups,
        stack=FunctionalStack.of,
    )


FAMILY = family(tuple(RESNET_BLOCKS))
