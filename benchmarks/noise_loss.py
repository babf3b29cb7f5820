"""Criticality's generic noise loss: the K noisy copies of a layer one at a time, or ``torch.vmap``.

Each row times one (alpha, sigma) evaluation of module criticality, the mean
cross-entropy of K perturbed copies of one layer on a training subset, in
eval mode, as :func:`trainables.measure.criticality.noise_loss` runs it for a
family without a fast path (:class:`FunctionalNoiseLoss`): ``loop`` is
its ``one_at_a_time`` (each copy through ``functional_call``, ``SUBSET_BATCH``
examples per forward), ``vmap`` its ``vmapped`` (``torch.vmap`` over the copies
of the same ``functional_call``, ``SUBSET_BATCH / K`` examples per forward: the
loop's memory), ``vmap xK`` the same with ``SUBSET_BATCH`` examples (K times
the memory). Networks: a conv net with BatchNorm
(3x3 conv + BN + ReLU + 2x2 max-pool per width, global average pool, linear
head, the shape of the ``cnn`` family) on 3x32x32 inputs, and the MNIST MLP
784-256-128-64-10 through the generic path, next to the MLP's own batched
``baddbmm`` path (:class:`MLPNoiseLoss`) for scale. Inputs are random tensors.

    python -m benchmarks.noise_loss [--quick]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.common import best_seconds, busy_warning, device, parse_mode, publish, table
from trainables.measure.criticality import SUBSET_BATCH, FunctionalNoiseLoss
from trainables.models.family import Layer, StateDict, generic_layers
from trainables.models.mlp import FAMILY as MLP_FAMILY
from trainables.models.mlp import MLP
from trainables.models.mlp_fast import MLPNoiseLoss

SIGMA = 0.01


class ConvBN(nn.Module):
    """The ``cnn`` family's shape: per width a 3x3 conv + BN + ReLU + 2x2 max-pool; GAP; ``fc``."""

    def __init__(self, widths: tuple[int, ...], channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        for i, width in enumerate(widths, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(channels, width, 3, padding=1))
            self.add_module(f"bn{i}", nn.BatchNorm2d(width))
            channels = width
        self.depth = len(widths)
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = F.max_pool2d(torch.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))), 2)
        return self.fc(x.mean(dim=(2, 3)))


def noisy_copies(trained: StateDict, layer: Layer, k: int) -> StateDict:
    generator = torch.Generator().manual_seed(0)
    noise = {key: torch.randn((k, *trained[key].shape), generator=generator) for key in layer.parameters}
    return {key: trained[key] + SIGMA * z.to(trained[key]) for key, z in noise.items()}


def cases(where: torch.device, n: int) -> list[tuple[str, nn.Module, list[Layer], torch.Tensor]]:
    """(name, network in eval mode, its first and last hidden layer, inputs)."""
    torch.manual_seed(0)
    conv = ConvBN((16, 32, 64)).to(where).eval()
    mlp = MLP(784, (256, 128, 64), 10).to(where).eval()
    images, flat = torch.randn(n, 3, 32, 32, device=where), torch.randn(n, 784, device=where)
    conv_layers, mlp_layers = generic_layers(conv), MLP_FAMILY.layers(mlp)
    return [
        ("conv 16-32-64", conv, [conv_layers[0], conv_layers[-2]], images),
        ("mlp 256-128-64", mlp, [mlp_layers[0], mlp_layers[-2]], flat),
    ]


PointLoss = Callable[[Layer, StateDict, StateDict], float]


def noise_losses(
    model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor, k: int
) -> dict[str, PointLoss]:
    """The ways measured, by name (``baddbmm`` for the MLP only)."""
    generic = FunctionalNoiseLoss(model, trained, x, y, SUBSET_BATCH)
    wide = FunctionalNoiseLoss(model, trained, x, y, SUBSET_BATCH * k)
    found: dict[str, PointLoss] = {
        "loop": lambda layer, copies, fixed: generic.one_at_a_time(copies, fixed),
        "vmap": lambda layer, copies, fixed: generic.vmapped(copies, fixed),
        "vmap xK": lambda layer, copies, fixed: wide.vmapped(copies, fixed),
    }
    if isinstance(model, MLP):
        found["baddbmm"] = MLPNoiseLoss(model, trained, x, y, SUBSET_BATCH)
    return found


def point_seconds(losses: PointLoss, layer: Layer, copies: StateDict, fixed: StateDict, repeats: int,
                  where: torch.device) -> tuple[float, float]:
    """(best seconds of one evaluation, its loss)."""
    return best_seconds(lambda: losses(layer, copies, fixed), repeats, where), losses(layer, copies, fixed)


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    where = device()
    n, repeats = mode.pick(256, 1024), mode.pick(2, 4)
    kernels = ("loop", "vmap", "vmap xK", "baddbmm")
    rows, records = [], []
    for name, model, layers, x in cases(where, n):
        y = torch.randint(0, 10, (n,), device=where)
        trained = {key: value.detach().clone() for key, value in model.state_dict().items()}
        for k in (4, 10):
            ways = noise_losses(model, trained, x, y, k)
            for layer in layers:
                copies = noisy_copies(trained, layer, k)
                fixed = {key: trained[key] for key in layer.buffers}
                timed = {way: point_seconds(losses, layer, copies, fixed, repeats, where)
                         for way, losses in ways.items()}
                seconds = {way: value[0] for way, value in timed.items()}
                values = [value[1] for value in timed.values()]
                rows.append([name, layer.name, k, *(seconds.get(way) for way in kernels),
                             seconds["vmap"] / seconds["loop"], max(values) - min(values)])
                records.append({"network": name, "layer": layer.name, "k": k, "examples": n,
                                "seconds": seconds, "losses": dict(zip(timed, values, strict=True))})
        print(f"  {name}: done", flush=True)
    headers = ["network", "layer", "K", *(f"{way} s" for way in kernels), "vmap/loop", "loss spread"]
    text = table(headers, rows)
    text += (f"\nseconds per (alpha, sigma) point on {n} examples (best of {repeats}); "
             f"device {where}, {torch.get_num_threads()} threads")
    publish("noise_loss", "noise_loss: one copy at a time against vmap", mode, text,
            {"device": str(where), "rows": records}, warning)


if __name__ == "__main__":
    main()
