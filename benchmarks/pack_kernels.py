"""Packed training steps: ``torch.baddbmm`` on stacked weights against ``torch.vmap``, by pack size K.

Each row times full training steps (forward, backward, SGD) of K networks of
the same widths on random batches of 256: ``baddbmm`` is layerswap's
:class:`StackedMLP` (what :func:`train_pack` runs), ``vmap`` is
``torch.vmap`` over ``functional_call`` of one MLP with the same stacked
parameters, and ``module`` (K = 1 only) is an ordinary ``nn.Module`` step as
:func:`train_network` takes it. Throughput is samples/s over all K networks;
it is what ``pack: auto`` is tuned on (``CPU_PACK_STEP_FLOPS`` in orchestrator/run/packing.py).

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
from trainables.models.mlp import MLP, StackedMLP
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
    publish("pack_kernels", "pack_kernels: baddbmm against vmap", mode, text,
            {"device": str(where), "rows": records}, warning)


if __name__ == "__main__":
    main()
