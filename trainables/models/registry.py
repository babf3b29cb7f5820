"""Which model family answers to which ``model:`` name, without importing torch.

The CLI validates a config's ``model`` against :data:`MODELS` (and its widths with
:mod:`trainables.models.architectures`) before anything heavy is imported; a worker
asks :func:`family` for the family, which imports the family's module (torch and
all) on first use. Each family module defines ``FAMILY``, a
:class:`trainables.models.family.ModelFamily` whose ``models`` are exactly the
names mapped to it here (tests/test_families.py checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from trainables.models.architectures import (
    CIFAR_RESNET_DEPTHS,
    NO_OPTIONS,
    RESNET_BLOCKS,
    VGG_CONVS_PER_STAGE,
    BuildOptions,
)
from trainables.spec import TrialSpec

if TYPE_CHECKING:
    from torch import nn

    from trainables.models.family import ModelFamily
    from trainables.models.sizing import FamilySizing

FAMILIES: dict[str, str] = {
    "mlp": "trainables.models.mlp",
    "cnn": "trainables.models.cnn",
    **{name: "trainables.models.vgg" for name in VGG_CONVS_PER_STAGE},
    **{name: "trainables.models.cifar_resnet" for name in CIFAR_RESNET_DEPTHS},
    **{name: "trainables.models.resnet" for name in RESNET_BLOCKS},
    "custom": "trainables.models.custom",
}
"""Model name -> the module that defines its family's ``FAMILY``."""

MODELS: tuple[str, ...] = tuple(FAMILIES)

SIZED_WITHOUT_TORCH: dict[str, str] = {"mlp": "trainables.models.mlp_footprint"}
"""Model name -> a module that defines its family's ``SIZING`` without importing torch (tests/test_families.py
checks that it equals the family's own)."""


def family(name: str) -> ModelFamily:
    """The family that builds ``model: name``; ValueError (one line) for an unknown name."""
    module = FAMILIES.get(name)
    if module is None:
        raise ValueError(f"model: {name!r} is not known; allowed: {', '.join(MODELS)}")
    return importlib.import_module(module).FAMILY


def sizing(name: str) -> FamilySizing:
    """What the driver needs of ``model: name``'s family to plan its trials; for the families of
    :data:`SIZED_WITHOUT_TORCH`, without importing torch."""
    module = SIZED_WITHOUT_TORCH.get(name)
    if module is not None:
        return importlib.import_module(module).SIZING
    return family(name).sizing


def build_network(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int,
    options: BuildOptions = NO_OPTIONS,
) -> nn.Module:
    """``model: name`` for samples of ``input_shape`` (one sample, e.g. ``(1, 28, 28)``) and ``n_classes``.

    Built where torch puts new tensors (the default device, or the meta device
    inside ``with torch.device("meta")``), with the family's own initialisation.
    """
    return family(name).build(name, input_shape, widths, n_classes, options)


def spec_network(spec: TrialSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The network of ``spec`` (its model, widths, norm and factory)."""
    return build_network(spec.model, input_shape, spec.widths, n_classes, BuildOptions.of(spec))
