"""Networks and their layers.

A *layer* is a module that owns parameters; swaps move whole layers (for an
MLP, ``fcK.weight`` and ``fcK.bias`` together).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.choices import MODELS


class MLP(nn.Module):
    """``in_features -> widths... -> n_classes`` with ReLU between; layers ``fc1``…``fcN``.

    Parameters keep PyTorch's default ``nn.Linear`` initialisation.
    """

    def __init__(self, in_features: int, widths: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        dims = (in_features, *widths, n_classes)
        self.layer_names = tuple(f"fc{i}" for i in range(1, len(dims)))
        for name, fan_in, fan_out in zip(self.layer_names, dims[:-1], dims[1:], strict=True):
            self.add_module(name, nn.Linear(fan_in, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        *hidden, last = self.layer_names
        for name in hidden:
            x = torch.relu(getattr(self, name)(x))
        return getattr(self, last)(x)


def build_model(name: str, in_features: int, widths: tuple[int, ...], n_classes: int) -> MLP:
    if name != "mlp":
        raise ValueError(f"model: {name!r} is not known; allowed: {', '.join(MODELS)}")
    return MLP(in_features, widths, n_classes)


def layer_tensors(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Map each layer (a module owning parameters directly) to its state_dict keys."""
    layers: dict[str, tuple[str, ...]] = {}
    for module_name, module in model.named_modules():
        own = tuple(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
        own += tuple(f"{module_name}.{b}" for b, _ in module.named_buffers(recurse=False))
        if own and module_name:
            layers[module_name] = own
    return layers


def tensor_layer(model: nn.Module) -> dict[str, str]:
    """Inverse of :func:`layer_tensors`: state_dict key -> layer name."""
    return {key: layer for layer, keys in layer_tensors(model).items() for key in keys}
