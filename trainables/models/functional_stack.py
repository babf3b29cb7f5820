"""K networks of any architecture trained together: ``torch.func.stack_module_state`` and ``vmap``.

Every parameter and every buffer (a BatchNorm's running statistics and step
counter included) is stacked along a new first dimension of size K; a step runs
the module's forward once under ``torch.vmap`` over ``functional_call`` of a
template of the network, each network on its own minibatch. In train mode a
BatchNorm normalises each network's batch by its own statistics and updates its
own stacked running statistics in place, as K separate networks would. The
conv families use it (``pack: N``); ``pack: auto`` only where it measured faster
than separate networks (``python -m benchmarks pack_kernels``;
:attr:`~trainables.models.family.ModelFamily.auto_pack_devices`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from trainables.models.family import StateDict


class FunctionalStack:
    """The :class:`~trainables.models.family.StackedNetworks` of any ``nn.Module``: stacked tensors
    by state_dict key, run through a template of the network on the meta device."""

    def __init__(self, template: nn.Module, params: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor],
                 keys: tuple[str, ...]) -> None:
        self.template = template
        self.params = params
        self.buffers = buffers
        self.keys = keys
        """The unstacked network's state_dict keys, in its order."""
        self._forward = torch.vmap(self._one, in_dims=(0, 0, 0))

    @classmethod
    def of(cls, models: Sequence[nn.Module]) -> FunctionalStack:
        """The models' tensors stacked on their device (copies; the models are left as they are)."""
        params, buffers = stack_module_state(list(models))
        template = copy.deepcopy(models[0]).to("meta").train(models[0].training)
        persistent = tuple(models[0].state_dict())
        return cls(
            template,
            {key: nn.Parameter(tensor.detach()) for key, tensor in params.items()},
            {key: tensor for key, tensor in buffers.items() if key in persistent},
            persistent,
        )

    def _one(self, params: StateDict, buffers: StateDict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, n_classes) of each network on its own batch ``x`` (K, B, *input_shape)."""
        return self._forward(self.params, self.buffers, x)

    def stacked_state(self) -> StateDict:
        """Every stacked tensor by state_dict key (live references, detached), (K, *shape)."""
        tensors = {**self.params, **self.buffers}
        return {key: tensors[key].detach() for key in self.keys}

    @torch.no_grad()
    def load(self, state: StateDict) -> None:
        """Copy stacked tensors saved from :meth:`stacked_state` into this stack."""
        for key, tensor in self.stacked_state().items():
            tensor.copy_(state[key])

    def state_dict(self, k: int) -> StateDict:
        """Network ``k``'s state_dict (contiguous detached copies)."""
        return {key: tensor[k].clone() for key, tensor in self.stacked_state().items()}

    def network_view(self, k: int) -> StateDict:
        """Network ``k``'s state_dict as views into the live stacked tensors."""
        return {key: tensor[k] for key, tensor in self.stacked_state().items()}
