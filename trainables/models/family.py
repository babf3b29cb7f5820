"""What a model family declares, and the generic rule that finds the layers of any ``nn.Module``.

A family (one module in ``trainables/models/``, found through
:mod:`trainables.models.registry`) is a :class:`ModelFamily`: the model names
it answers to, its default widths, how to build a network, its layers in
forward order (:class:`Layer`) and the groups of layers it has beyond single
layers (:class:`LayerGroup`: residual blocks, stages). It may also offer faster ways to do what the
generic code does with ``torch.func.functional_call``: train K networks
stacked (:class:`MakeStack`), evaluate many swap variants at once
(:class:`VariantEvaluator`), compute the criticality loss of K noise samples
together (:class:`MakeNoiseLoss`), draw a layer afresh (:class:`FreshDraw`).
A capability a family does not offer is None.

A layer (DESIGN.md, "Layers and layer groups") is a conv or linear module
with the normalisation module that directly follows it and every tensor they
own. :func:`generic_layers` finds them in any module: every module that owns
parameters starts a layer, and a BatchNorm/LayerNorm/GroupNorm joins the layer
registered just before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from trainables.models.architectures import BuildOptions
from trainables.models.sizing import FamilySizing, FootprintFormula

StateDict = dict[str, torch.Tensor]
"""A network's tensors by state_dict key (``fc1.weight``, ``bn1.running_mean``, ...)."""

NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
"""Normalisation modules that belong to the layer registered just before them."""

CONVS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)

COUNTER = "num_batches_tracked"
"""A BatchNorm's step counter: stays the base network's in every swap (DESIGN.md, "BatchNorm in swaps")."""


@dataclass(frozen=True)
class Layer:
    """The unit a swap moves: a conv/linear module, the norm that follows it, and their tensors.

    ``name`` is the conv/linear module's path (``fc1``, ``layer2.0.conv1``),
    ``index`` its 0-based position in the forward pass, ``module_type``
    ``linear``, ``conv`` or the module's class name; ``modules`` the paths of
    the modules it comprises (``name`` first). ``parameters`` and ``buffers``
    are the state_dict keys it owns: trainable tensors, and the rest (a
    BatchNorm's ``running_mean``, ``running_var``, ``num_batches_tracked``).

    ``level`` is ``layer`` for a layer; a group of layers swapped together is a Layer too
    (:func:`trainables.models.units.group_unit`), of level ``block`` or ``stage``, its
    ``index`` its first layer's and its ``module_type`` its level.
    """

    name: str
    index: int
    module_type: str
    modules: tuple[str, ...]
    parameters: tuple[str, ...]
    buffers: tuple[str, ...] = ()
    level: str = "layer"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every state_dict key the layer owns, parameters first."""
        return self.parameters + self.buffers

    @property
    def swapped(self) -> tuple[str, ...]:
        """The keys a swap replaces: all but a BatchNorm's step counter."""
        return tuple(key for key in self.keys if key.rsplit(".", 1)[-1] != COUNTER)


@dataclass(frozen=True)
class LayerGroup:
    """Consecutive layers swapped together (DESIGN.md, "Layers and layer groups").

    ``level`` is ``block`` (a residual block, named ``layer2.0``) or ``stage``
    (the layers of one resolution: ``layer2`` in a ResNet, ``stage1`` ... in a
    VGG); ``layers`` the names of its layers in forward order. Group names never
    equal layer names. A group of one layer is declared like any other; its
    layer's own rows serve for it.
    """

    name: str
    level: str
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """Accuracy (fraction correct) and mean cross-entropy over ``n_test`` samples."""

    test_acc: float
    test_loss: float
    n_test: int


class BuildNetwork(Protocol):
    def __call__(
        self, name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int,
        options: BuildOptions,
    ) -> nn.Module:
        """The network ``name`` for samples of ``input_shape`` (one sample) and ``n_classes`` classes,
        with ``options`` (``norm``; a ``custom`` model's factory)."""
        ...


class StackedNetworks(Protocol):
    """K networks of one architecture as stacked trainable tensors, trained together."""

    def parameters(self) -> list[nn.Parameter]:
        """The stacked trainable tensors, for the optimizer."""
        ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, n_classes) of each network on its own batch ``x`` (K, B, *input_shape)."""
        ...

    def stacked_state(self) -> StateDict:
        """The stacked tensors (live references), as saved for a resume."""
        ...

    def load(self, state: StateDict) -> None:
        """Copy tensors saved from :meth:`stacked_state` into the stack."""
        ...

    def state_dict(self, k: int) -> StateDict:
        """Network ``k``'s state_dict (detached copies, in the unstacked network's layout)."""
        ...

    def network_view(self, k: int) -> StateDict:
        """Network ``k``'s state_dict as views into the live stacked tensors (no copy)."""
        ...


class MakeStack(Protocol):
    def __call__(self, models: Sequence[nn.Module]) -> StackedNetworks:
        """The models' tensors stacked on their device (copies; the models are left as they are)."""
        ...


class VariantEvaluator(Protocol):
    def __call__(
        self, model: nn.Module, variants: Sequence[StateDict], x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> list[Evaluation]:
        """Each variant's :class:`Evaluation` on (``x``, ``y``), ``batch`` samples at a time, in order,
        with the arithmetic of evaluating it alone."""
        ...


class NoiseLoss(Protocol):
    def __call__(self, layer: Layer, copies: StateDict, fixed: StateDict) -> float:
        """Mean over K copies of the network's mean cross-entropy, ``layer`` replaced by each copy.

        ``copies`` maps each of the layer's parameter keys to K stacked tensors
        (K, *shape); ``fixed`` holds the layer's buffers, the same for every
        copy; every other tensor is the trained network's.
        """
        ...


class MakeNoiseLoss(Protocol):
    def __call__(
        self, model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> NoiseLoss:
        """The :class:`NoiseLoss` of ``model`` with ``trained`` weights on (``x``, ``y``), ``batch``
        samples per forward pass."""
        ...


class FreshDraw(Protocol):
    def __call__(self, model: nn.Module, layer: Layer, seed: int) -> StateDict:
        """A new draw of ``layer``'s tensors (:attr:`Layer.keys`) from its initialisation, seeded by
        ``seed``, on the CPU; ``model`` may be on any device, the meta device included."""
        ...


@dataclass(frozen=True, eq=False)
class ModelFamily:
    """One family of networks: what it is called, how it is built, its layers, its fast paths.

    ``default_widths`` maps each of ``models`` to the widths a config gets
    when it names none. ``layers`` lists a built network's layers in forward
    order; ``groups`` its groups of layers in forward order (None: none beyond
    single layers). The optional capabilities are None where the family has
    none (the generic ``functional_call`` paths serve), except ``stack``: a
    family without one trains one network per trial. ``auto_pack_devices``:
    the device types ("cpu", "cuda") on which ``pack: auto`` trains networks
    together, those where ``python -m benchmarks`` measured the stacked form
    faster than separate networks (``pack: N`` packs anywhere there is a stack).
    ``footprint``: the network's footprint by formula, the meta device's figures without running
    it (None: :func:`~trainables.train.pack_shape.measure_network` measures it there).
    """

    models: tuple[str, ...]
    default_widths: Mapping[str, tuple[int, ...]]
    build: BuildNetwork
    layers: Callable[[nn.Module], tuple[Layer, ...]]
    groups: Callable[[nn.Module], tuple[LayerGroup, ...]] | None = None
    stack: MakeStack | None = None
    auto_pack_devices: frozenset[str] = frozenset()
    evaluate_variants: VariantEvaluator | None = None
    noise_loss: MakeNoiseLoss | None = None
    fresh_draw: FreshDraw | None = None
    footprint: FootprintFormula | None = None

    @property
    def sizing(self) -> FamilySizing:
        """What the driver needs of this family to plan its trials."""
        return FamilySizing(
            self.stack is not None, self.auto_pack_devices, self.evaluate_variants is not None, self.footprint
        )


def module_type(module: nn.Module) -> str:
    """``linear``, ``conv``, or the module's class name (the ``module_type`` column)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, CONVS):
        return "conv"
    return type(module).__name__


def generic_layers(model: nn.Module) -> tuple[Layer, ...]:
    """The layers of any module, in the order its modules are registered.

    Every module that owns parameters (the root excepted) starts a layer; a
    BatchNorm/LayerNorm/GroupNorm joins the layer started just before it, with
    its parameters and its state_dict buffers. Buffers of any other module are
    part of no layer.
    """
    persistent = set(model.state_dict())
    found: list[tuple[list[str], list[str], list[str]]] = []
    for path, module in model.named_modules():
        if not path:
            continue
        params = [f"{path}.{name}" for name, _ in module.named_parameters(recurse=False)]
        buffers = [f"{path}.{name}" for name, _ in module.named_buffers(recurse=False)]
        buffers = [key for key in buffers if key in persistent]
        if isinstance(module, NORMS) and found and (params or buffers):
            paths, layer_params, layer_buffers = found[-1]
            paths.append(path)
            layer_params.extend(params)
            layer_buffers.extend(buffers)
        elif params:
            found.append(([path], params, buffers))
    return tuple(
        Layer(paths[0], index, module_type(model.get_submodule(paths[0])), tuple(paths), tuple(params),
              tuple(buffers))
        for index, (paths, params, buffers) in enumerate(found)
    )


def layer_of_keys(layers: Sequence[Layer]) -> dict[str, str]:
    """State_dict key -> the name of the layer that owns it."""
    return {key: layer.name for layer in layers for key in layer.keys}
