"""A ``custom`` model's factory, on the driver: checked before Ray starts, shipped to the workers.

The factory's module is imported as Python would from the directory the sweep is started in
(which is put first on ``sys.path``, as ``python -m`` does), then from ``PYTHONPATH``. Before
Ray starts, its network is built on the meta device for the dataset's samples and run once:
a module that cannot be imported, a factory that returns anything but an ``nn.Module``, layer
names that collide (a module registered twice) or logits of the wrong shape are one line. Its
top-level package (or single-file module) then reaches every Ray worker through Ray's
``runtime_env`` (``py_modules``), unless it is installed under site-packages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from types import ModuleType

import torch

from orchestrator.config.sweep_config import SweepConfig
from trainables.data.catalog import CATALOG
from trainables.models.architectures import BuildOptions
from trainables.models.custom import FactoryError, check_layers, module_for_workers
from trainables.models.registry import build_network
from trainables.spec import TrialSpec


def factory_modules(factories: Iterable[str]) -> list[ModuleType]:
    """The modules to ship to the workers for ``factories`` (imported here; FactoryError when one
    cannot be), each once."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    modules: dict[str, ModuleType] = {}
    for factory in sorted(set(factories)):
        module = module_for_workers(factory)
        if module is not None:
            modules[module.__name__] = module
    return list(modules.values())


def check_custom_model(config: SweepConfig) -> list[ModuleType]:
    """For ``model: custom``: build each width config's network on the meta device and run a batch
    of two samples through it; the modules to ship (:func:`factory_modules`). Nothing otherwise."""
    if config.model != "custom" or config.factory is None:
        return []
    if config.pack > 1:
        raise FactoryError(f"pack: {config.pack} is not allowed for model custom; a custom model trains one "
                           "network per trial (pack: 1 or auto)")
    modules = factory_modules([config.factory])
    info = CATALOG[config.dataset]
    options = BuildOptions(config.norm, config.factory, config.factory_kwargs)
    for widths in config.widths:
        with torch.device("meta"):
            model = build_network("custom", info.input_shape, widths, info.n_classes, options)
            check_layers(model, config.factory)
            batch = torch.empty(2, *info.input_shape)
            try:
                logits = model.train()(batch)
            except Exception as err:  # noqa: BLE001 - the user's forward: one line naming it
                raise FactoryError(
                    f"factory: {config.factory}'s network fails on a batch of shape {tuple(batch.shape)} "
                    f"({config.dataset}): {type(err).__name__}: {err}"
                ) from None
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, info.n_classes):
            found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise FactoryError(
                f"factory: {config.factory}'s network maps a batch of shape {tuple(batch.shape)} to {found}, "
                f"expected logits of shape (2, {info.n_classes}) for {config.dataset}"
            )
    return modules


def stored_factory_modules(specs: Iterable[TrialSpec]) -> list[ModuleType]:
    """The modules to ship for the custom models among stored networks' ``specs``."""
    return factory_modules(spec.factory for spec in specs if spec.factory is not None)
