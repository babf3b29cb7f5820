"""What each ``model:`` name means, without torch: its default widths and norm, and whether widths
fit the family and the input.

The config is validated with this before anything heavy is imported: widths of the wrong number
of stages, or so many poolings that an image shrinks below one pixel, are one line (a
``ValueError`` the config turns into its error). The family modules take their default widths
from here, so each default is written once (DESIGN.md, "Model families").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainables.spec import FactoryKwargs, TrialSpec

NORMS = ("none", "batch")
"""``norm`` values: ``batch`` = a BatchNorm after every conv (and no conv bias)."""

VGG_CONVS_PER_STAGE: dict[str, tuple[int, ...]] = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
"""The standard VGG configurations A, B, D, E: 3x3 convs per stage, 2x2 max-pool between stages."""

CIFAR_RESNET_DEPTHS: dict[str, int] = {f"resnet{d}": d for d in (20, 32, 44, 56, 110)}
"""He et al. 2016's CIFAR ResNets: depth = 6n + 2, n basic blocks in each of 3 stages."""

RESNET_BLOCKS: dict[str, tuple[int, ...]] = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
"""Basic blocks per stage of the ImageNet ResNets, here with a 3x3 stride-1 stem for 32x32 inputs."""


def blocks_per_stage(model: str) -> tuple[int, ...]:
    """Basic blocks in each stage of a ResNet ``model``."""
    if model in RESNET_BLOCKS:
        return RESNET_BLOCKS[model]
    return ((CIFAR_RESNET_DEPTHS[model] - 2) // 6,) * 3


@dataclass(frozen=True)
class Architecture:
    """What the config needs to know of a model before building it.

    ``stages``: how many widths it takes (None: any number, at least one).
    ``poolings``: 2x2 max-pools an image goes through, given the widths (None: no
    max-pool, so no input is too small). ``image``: it needs (C, H, W) samples.
    ``norms``: the ``norm`` values it accepts, the first its default.
    """

    default_widths: tuple[int, ...]
    norms: tuple[str, ...]
    stages: int | None = None
    image: bool = False
    pools_per_width: bool = False
    """One 2x2 max-pool per width (``cnn``), else ``stages - 1`` between the stages (VGG)."""
    pools_between_stages: bool = False
    meaning: str = field(default="hidden widths", compare=False)

    @property
    def default_norm(self) -> str:
        return self.norms[0]

    def poolings(self, widths: tuple[int, ...]) -> int:
        if self.pools_per_width:
            return len(widths)
        if self.pools_between_stages and self.stages is not None:
            return self.stages - 1
        return 0


_CONV_NORMS = ("batch", "none")

ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture((2048, 1024, 512, 256), ("none",)),
    "cnn": Architecture((16, 32), _CONV_NORMS, image=True, pools_per_width=True,
                        meaning="channels of each conv"),
    **{
        name: Architecture((64, 128, 256, 512, 512), _CONV_NORMS, stages=5, image=True,
                           pools_between_stages=True, meaning="channels of the 5 stages")
        for name in VGG_CONVS_PER_STAGE
    },
    **{
        name: Architecture((16, 32, 64), _CONV_NORMS, stages=3, image=True,
                           meaning="channels of the 3 stages")
        for name in CIFAR_RESNET_DEPTHS
    },
    **{
        name: Architecture((64, 128, 256, 512), _CONV_NORMS, stages=4, image=True,
                           meaning="channels of the 4 stages")
        for name in RESNET_BLOCKS
    },
    "custom": Architecture((), ("none",), meaning="passed to the factory"),
}
"""Every model name the registry knows (tests/test_families.py checks they are the same names)."""


def default_widths(model: str) -> tuple[int, ...]:
    return ARCHITECTURES[model].default_widths


def check_architecture(model: str, widths: tuple[int, ...], norm: str, dataset: str,
                       input_shape: tuple[int, ...]) -> None:
    """ValueError (one line, ``field: value is not allowed; ...``) unless ``model`` with ``widths``
    and ``norm`` fits samples of ``input_shape`` (of ``dataset``)."""
    arch = ARCHITECTURES[model]
    if norm not in arch.norms:
        raise ValueError(f"norm: {norm!r} is not allowed for model {model}; allowed: {', '.join(arch.norms)}")
    if arch.image and len(input_shape) != 3:
        raise ValueError(
            f"model: {model!r} is not allowed with dataset {dataset} (samples of shape {input_shape}); "
            f"it needs images (C, H, W), e.g. dataset mnist, fashion-mnist, cifar10, cifar100 or "
            "synthetic-images"
        )
    if arch.stages is not None and len(widths) != arch.stages:
        raise ValueError(
            f"widths: {list(widths)} is not allowed for model {model}; expected {arch.stages} numbers, "
            f"the {arch.meaning} (default {list(arch.default_widths)})"
        )
    if model != "custom" and not widths:
        raise ValueError(f"widths: [] is not allowed for model {model}; expected the {arch.meaning}")
    poolings = arch.poolings(widths)
    if poolings and min(input_shape[1:]) >> poolings < 1:
        side = "x".join(map(str, input_shape[1:]))
        most = min(input_shape[1:]).bit_length() - 1
        fewer = f"use at most {most} widths" if arch.pools_per_width else "use larger images"
        raise ValueError(
            f"widths: {list(widths)} is not allowed for model {model} on {dataset}: {poolings} 2x2 "
            f"max-pools take a {side} image below 1 pixel; {fewer}"
        )


@dataclass(frozen=True)
class BuildOptions:
    """The training-spec fields beyond the widths that shape a network: ``norm``, and a ``custom``
    model's ``factory`` with its ``factory_kwargs``."""

    norm: str = "none"
    factory: str | None = None
    factory_kwargs: FactoryKwargs = FactoryKwargs()

    @classmethod
    def of(cls, spec: TrialSpec) -> BuildOptions:
        """The options of ``spec``."""
        return cls(spec.norm, spec.factory, spec.factory_kwargs)


NO_OPTIONS = BuildOptions()
"""No norm, no factory: an MLP's options."""
