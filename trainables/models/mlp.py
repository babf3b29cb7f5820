"""The ``mlp`` family: Linear + ReLU with a linear head, and its stacked form for packed training.

Layers ``fc1`` ... ``fcN`` (``fcK.weight``, ``fcK.bias``), PyTorch's default
``nn.Linear`` initialisation. Its fast measurement paths (the prefix-sharing
variant tree, the batched criticality noise) are in
:mod:`trainables.models.mlp_fast`, its footprint by formula in :mod:`trainables.models.mlp_footprint`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainables.models.architectures import BuildOptions, default_widths
from trainables.models.family import Layer, ModelFamily, StateDict
from trainables.models.mlp_fast import MLPNoiseLoss, evaluate_variant_tree
from trainables.models.mlp_footprint import SIZING

SEED_WIDTHS = default_widths("mlp")
"""The seed notebook's hidden widths (784-2048-1024-512-256-10 on MNIST)."""


class MLP(nn.Module):
    """``in_features -> widths... -> n_classes`` with ReLU between; layers ``fc1``…``fcN``.

    The input is flattened: any per-sample shape of ``in_features`` elements.
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


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> MLP:
    """An MLP over samples of ``input_shape`` (flattened to ``prod(input_shape)`` features); it has
    no norm (``options.norm`` is ``none``)."""
    return MLP(math.prod(input_shape), widths, n_classes)


def layers(model: nn.Module) -> tuple[Layer, ...]:
    """``fc1`` ... ``fcN`` of an :class:`MLP`, each its weight and bias."""
    return tuple(
        Layer(name, index, "linear", (name,), (f"{name}.weight", f"{name}.bias"))
        for index, name in enumerate(model.layer_names)
    )


@dataclass
class StackedMLP:
    """K MLPs' trainable tensors: per layer a transposed stacked weight and a stacked bias.

    ``weights[i]`` is (K, in, out), network k's ``fc{i+1}.weight`` transposed;
    ``biases[i]`` is (K, out). The transposed layout lets ``baddbmm`` run
    without transposes and makes each weight's gradient come out in the
    parameter's own layout, so autograd never copies it (the (K, out, in)
    layout measured 25% slower on the seed network).
    """

    layer_names: tuple[str, ...]
    weights: list[nn.Parameter]
    biases: list[nn.Parameter]

    @classmethod
    def of(cls, models: Sequence[nn.Module]) -> StackedMLP:
        """The models' weights stacked on their device (copies; the models are left as they are)."""
        names = models[0].layer_names
        stacks = [[model.get_submodule(name) for model in models] for name in names]
        return cls(
            names,
            [nn.Parameter(torch.stack([layer.weight.detach().t() for layer in stack])) for stack in stacks],
            [nn.Parameter(torch.stack([layer.bias.detach() for layer in stack])) for stack in stacks],
        )

    def parameters(self) -> list[nn.Parameter]:
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, n_classes) of each network on its own batch ``x`` (K, B, *input_shape)."""
        x = x.flatten(2)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight)
            if i < last:
                x = torch.relu(x)
        return x

    def stacked_state(self) -> StateDict:
        """The stacked tensors (live references): ``fcN.weight_t`` (K, in, out), ``fcN.bias`` (K, out)."""
        state: StateDict = {}
        for name, weight, bias in zip(self.layer_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight_t"] = weight.detach()
            state[f"{name}.bias"] = bias.detach()
        return state

    @torch.no_grad()
    def load(self, state: StateDict) -> None:
        """Copy stacked tensors saved from :meth:`stacked_state` into this pack."""
        for key, tensor in self.stacked_state().items():
            tensor.copy_(state[key])

    def state_dict(self, k: int) -> StateDict:
        """Network ``k``'s weights as an MLP state_dict (contiguous detached copies)."""
        state: StateDict = {}
        for name, weight, bias in zip(self.layer_names, self.weights, self.biases, strict=True):
            state[f"{name}.weight"] = weight[k].detach().t().clone(memory_format=torch.contiguous_format)
            state[f"{name}.bias"] = bias[k].detach().clone()
        return state

    def network_view(self, k: int) -> StateDict:
        """Network ``k``'s MLP state_dict as views into the live stacked tensors."""
        view: StateDict = {}
        for key, tensor in self.stacked_state().items():
            if key.endswith(".weight_t"):
                view[key.removesuffix("_t")] = tensor[k].t()
            else:
                view[key] = tensor[k]
        return view


FAMILY = ModelFamily(
    models=("mlp",),
    default_widths={"mlp": SEED_WIDTHS},
    build=build,
    layers=layers,
    stack=StackedMLP.of,
    auto_pack_devices=SIZING.auto_pack_devices,
    evaluate_variants=evaluate_variant_tree,
    noise_loss=MLPNoiseLoss,
    footprint=SIZING.footprint,
)
