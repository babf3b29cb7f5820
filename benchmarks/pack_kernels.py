"""Packed training steps: ``torch.baddbmm`` on stacked weights against ``torch.vmap``, by pack size K;
and for the conv families, ``vmap`` over stacked networks against K separate networks.

Each MLP row times full training steps (forward, backward, SGD) of K networks of
the same widths on random batches of 256: ``baddbmm`` is layerswap's
:class:`StackedMLP` (what :func:`train_pack` runs), ``vmap`` is
``torch.vmap`` over ``functional_call`` of one MLP with the same stacked
parameters, and ``module`` (K = 1 only) is an ordinary ``nn.Module`` step as
:func:`train_network` takes it. Throughput is samples/s over all K networks;
it is what ``pack: auto`` is tuned on (``CPU_PACK_STEP_FLOPS`` in orchestrator/run/packing.py).

Each conv row (``cnn`` 16-32 on 1x28x28, ``resnet20`` on 3x32x32, BatchNorm, batch 128,
SGD with momentum) times K networks trained together as
:class:`~trainables.models.functional_stack.FunctionalStack` (``vmap``, what ``pack: N``
runs) against one network's ``nn.Module`` step, whose samples/s K separate networks share.
A family packs under ``pack: auto`` only on the devices where the stack measured faster
(:attr:`~trainables.models.family.ModelFamily.auto_pack_devices`).

    python -m benchmarks.pack_kernels [--quick]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmarks.common import (
    BATCH,
    N_CLASSES,
    N_FEATURES,
    NETWORKS,
    best_seconds,
    busy_warning,
    device,
    mnist_shape,
    parse_mode,
    publish,
    table,
)
from trainables.models.architectures import BuildOptions
from trainables.models.functional_stack import FunctionalStack
from trainables.models.mlp import MLP, StackedMLP
from trainables.models.registry import build_network
from trainables.train.pack import pack_losses

LR = 0.01
Step = Callable[[], None]


def models(widths: tuple[int, ...], pack: int, where: torch.device) -> list[MLP]:
    return [MLP(N_FEATURES, widths, N_CLASSES).to(where) for _ in range(pack)]


def batches(pack: int, where: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(pack, BATCH, N_FEATURES, device=where)
    return x, torch.randint(0, N_CLASSES, (pack, BATCH), device=where)


def baddbmm_step(widths: tuple[int, ...], pack: int, where: torch.device) -> Step:
    stack = StackedMLP.of(models(widths, pack, where))
    optimizer = torch.optim.SGD(stack.parameters(), lr=LR)
    x, y = batches(pack, where)

    def step() -> None:
        losses = pack_losses(stack.forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()

    return step


def vmap_step(widths: tuple[int, ...], pack: int, where: torch.device) -> Step:
    nets = models(widths, pack, where)
    names = [name for name, _ in nets[0].named_parameters()]
    params = {
        name: nn.Parameter(torch.stack([dict(net.named_parameters())[name].detach() for net in nets]))
        for name in names
    }
    optimizer = torch.optim.SGD(list(params.values()), lr=LR)
    template = nets[0]
    x, y = batches(pack, where)

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, p, (xb,)), yb)

    losses_of = torch.vmap(loss)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses_of(params, x, y).sum().backward()
        optimizer.step()

    return step


def module_step(widths: tuple[int, ...], pack: int, where: torch.device) -> Step:
    (net,) = models(widths, 1, where)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    x, y = batches(1, where)

    def step() -> None:
        loss = F.cross_entropy(net(x[0]), y[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


KERNELS = {"module": module_step, "baddbmm": baddbmm_step, "vmap": vmap_step}

CONV_NETWORKS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "cnn": ((16, 32), (1, 28, 28)),
    "resnet20": ((16, 32, 64), (3, 32, 32)),
}
"""Conv rows: the family's widths and the sample shape (Fashion-MNIST's, CIFAR's)."""
CONV_BATCH = 128


def conv_step(model: str, pack: int, where: torch.device, stacked: bool) -> Step:
    """One training step of ``pack`` conv networks stacked (vmap), or of one network alone."""
    widths, shape = CONV_NETWORKS[model]
    nets = [build_network(model, shape, widths, N_CLASSES, BuildOptions("batch")).to(where).train()
            for _ in range(pack if stacked else 1)]
    x = torch.randn(len(nets), CONV_BATCH, *shape, device=where)
    y = torch.randint(0, N_CLASSES, (len(nets), CONV_BATCH), device=where)
    stack = FunctionalStack.of(nets) if stacked else None
    optimizer = torch.optim.SGD(stack.parameters() if stack else nets[0].parameters(), lr=LR, momentum=0.9)

    def step() -> None:
        logits = stack.forward(x) if stack else nets[0](x[0]).unsqueeze(0)
        optimizer.zero_grad(set_to_none=True)
        pack_losses(logits, y).sum().backward()
        optimizer.step()

    return step


def conv_rows(mode, where: torch.device) -> tuple[list[list], list[dict]]:
    """Per conv network and K: separate networks' and the stack's samples/s, and their ratio."""
    rows, records = [], []
    for model in CONV_NETWORKS:
        repeats = mode.pick(3, 8) if model == "cnn" else mode.pick(2, 4)
        alone = CONV_BATCH / best_seconds(conv_step(model, 1, where, stacked=False), repeats, where, warmup=2)
        for pack in mode.pick((2, 4), (2, 4, 8)):
            seconds = best_seconds(conv_step(model, pack, where, stacked=True), repeats, where, warmup=2)
            stacked = pack * CONV_BATCH / seconds
            rows.append([model, pack, alone, stacked, stacked / alone])
            records.append({"network": model, "pack": pack, "separate_samples_per_second": alone,
                            "stacked_samples_per_second": stacked, "stacked_over_separate": stacked / alone})
        print(f"  {model}: done", flush=True)
    return rows, records


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    where = device()
    sizes = {
        "small": mode.pick((1, 4), (1, 2, 4, 8, 16)),
        "seed": mode.pick((1, 2), (1, 2, 4)),
    }
    rows, records = [], []
    for name, widths in NETWORKS.items():
        flops = mnist_shape(widths).step_flops
        repeats = mode.pick(5, 15) if name == "small" else mode.pick(2, 4)
        for pack in sizes[name]:
            rates = {}
            for kernel, make in KERNELS.items():
                if kernel == "module" and pack > 1:
                    continue
                seconds = best_seconds(make(widths, pack, where), repeats, where, warmup=2)
                rates[kernel] = pack * BATCH / seconds
            gflops = rates["baddbmm"] / BATCH * flops / 1e9
            rows.append([name, pack, rates.get("module"), rates["baddbmm"], rates["vmap"],
                         rates["vmap"] / rates["baddbmm"], gflops])
            records.append({"network": name, "widths": list(widths), "pack": pack,
                            "samples_per_second": rates, "baddbmm_gflops": gflops,
                            "step_flops_per_network": flops})
        print(f"  {name}: done", flush=True)
    headers = ["network", "K", "module /s", "baddbmm /s", "vmap /s", "vmap/baddbmm", "baddbmm GFLOP/s"]
    text = table(headers, rows)
    text += f"\nsamples/s over all K networks; device {where}, {torch.get_num_threads()} threads"
    conv, conv_records = conv_rows(mode, where)
    conv_headers = ["conv network", "K", "separate /s", "stacked (vmap) /s", "stacked/separate"]
    text += "\n\n" + table(conv_headers, conv)
    text += (f"\nbatch {CONV_BATCH} per network, BatchNorm, SGD momentum; separate = one network's "
             "nn.Module step, which K networks run one after the other")
    publish("pack_kernels", "pack_kernels: baddbmm against vmap; conv stacks against separate networks", mode,
            text, {"device": str(where), "rows": records, "conv_rows": conv_records}, warning)


if __name__ == "__main__":
    main()
