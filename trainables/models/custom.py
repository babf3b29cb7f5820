"""``model: custom``: a user's ``nn.Module`` from a factory, ``factory: "package.module:callable"``.

The callable is called as ``factory(input_shape=..., n_classes=..., widths=...,
**factory_kwargs)`` (``input_shape`` one sample's, e.g. ``(3, 32, 32)``; ``widths`` a
tuple of ints, empty unless the config gives some) and returns an ``nn.Module``
that maps a batch (B, *input_shape) to logits (B, n_classes). Its layers are found
by the generic rule (:func:`~trainables.models.family.generic_layers`); it trains
one network per trial. Its module reaches Ray workers through Ray's
``runtime_env`` (``py_modules``, set by the driver), and each trial row records
the module's file and the sha256 of its source (:func:`factory_source`).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from trainables.errors import UserError
from trainables.models.architectures import BuildOptions
from trainables.models.family import ModelFamily, generic_layers


class FactoryError(UserError):
    """A ``custom`` model's factory cannot be used; the message is one line."""


def split_factory(factory: str) -> tuple[str, str]:
    """(module, attribute path) of ``"package.module:callable"``; FactoryError for another form."""
    module, sep, attribute = factory.partition(":")
    names = [*module.split("."), *attribute.split(".")]
    if not sep or not all(name.isidentifier() for name in names):
        raise FactoryError(
            f"factory: {factory!r} is not allowed; expected 'package.module:callable' (a module Python can "
            "import and a callable in it)"
        )
    return module, attribute


def factory_module(factory: str) -> ModuleType:
    """The module of ``factory``, imported; FactoryError (one line) naming why it cannot be."""
    module_name, _ = split_factory(factory)
    try:
        return importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any failure of the user's module is one line
        raise FactoryError(
            f"factory: cannot import {module_name!r} ({type(err).__name__}: {err}); the module must be "
            "importable from the directory the sweep is started in or from PYTHONPATH"
        ) from None


def load_factory(factory: str) -> object:
    """The callable ``factory`` names; FactoryError when it is missing or not callable."""
    module = factory_module(factory)
    target: object = module
    _, attribute = split_factory(factory)
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise FactoryError(f"factory: {factory!r}: module {module.__name__!r} has no {attribute!r}")
        target = getattr(target, name)
    if not callable(target):
        raise FactoryError(f"factory: {factory!r} is a {type(target).__name__}, not a callable")
    return target


def build(
    name: str, input_shape: tuple[int, ...], widths: tuple[int, ...], n_classes: int, options: BuildOptions
) -> nn.Module:
    """The factory's network; FactoryError when it fails or returns anything but an ``nn.Module``."""
    if options.factory is None:
        raise FactoryError("factory: model custom needs factory: 'package.module:callable'")
    make = load_factory(options.factory)
    kwargs = dict(options.factory_kwargs)
    try:
        model = make(input_shape=input_shape, n_classes=n_classes, widths=widths, **kwargs)
    except Exception as err:  # noqa: BLE001 - the user's code: one line naming it
        raise FactoryError(
            f"factory: {options.factory}(input_shape={input_shape}, n_classes={n_classes}, "
            f"widths={widths}, **{kwargs}) raised {type(err).__name__}: {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise FactoryError(f"factory: {options.factory} returned a {type(model).__name__}, not an nn.Module")
    return model


def shared_modules(model: nn.Module) -> list[tuple[str, str]]:
    """(first path, other path) of every module with parameters registered under two names.

    The generic rule names a layer by its module's path, so a module (or
    parameter) registered twice (tied weights) would be one layer under two
    names: the state_dict holds its tensors under both.
    """
    first: dict[int, str] = {}
    shared = []
    for path, module in model.named_modules(remove_duplicate=False):
        if not path or not list(module.parameters(recurse=False)):
            continue
        if id(module) in first:
            shared.append((first[id(module)], path))
        else:
            first[id(module)] = path
    seen: dict[int, str] = {}
    for key, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen and seen[id(parameter)].rpartition(".")[0] != key.rpartition(".")[0]:
            shared.append((seen[id(parameter)], key))
        seen.setdefault(id(parameter), key)
    return shared


def check_layers(model: nn.Module, factory: str) -> None:
    """FactoryError unless ``model`` has layers and each tensor belongs to one layer name only."""
    shared = shared_modules(model)
    if shared:
        one, other = shared[0]
        raise FactoryError(
            f"factory: {factory} has layer names that collide: {other!r} is {one!r} registered again "
            "(tied weights); a layer must own its tensors under one name"
        )
    if not generic_layers(model):
        raise FactoryError(f"factory: {factory} returned a module without parameters (no layers to swap)")


def module_for_workers(factory: str) -> ModuleType | None:
    """The top-level package (or single-file module) of ``factory``'s module, for Ray's
    ``py_modules``; None when it is installed (under site-packages) or part of Python itself."""
    top = sys.modules[factory_module(factory).__name__.split(".")[0]]
    location = getattr(top, "__file__", None)
    if location is None:
        return None
    installed = [Path(path) for path in sys.path if Path(path).name in ("site-packages", "dist-packages")]
    installed.append(Path(inspect.getfile(inspect)).parent)  # the standard library
    here = Path(location).resolve()
    if any(here.is_relative_to(root.resolve()) for root in installed):
        return None
    return top


def factory_source(factory: str) -> str:
    """Where the factory came from: its module's file, relative to the folder it is imported from,
    and the sha256 of that file (``"mypkg/nets.py sha256:9f2c..."``)."""
    module = factory_module(factory)
    path = Path(inspect.getfile(module)).resolve()
    depth = module.__name__.count(".") + (1 if path.name == "__init__.py" else 0)
    root = path.parents[depth]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path.relative_to(root).as_posix()} sha256:{digest}"


FAMILY = ModelFamily(models=("custom",), default_widths={"custom": ()}, build=build, layers=generic_layers)
