"""How close one training epoch comes to this machine's matmul (and, on a GPU, memory) floor.

The matmul floor is the time this machine needs for the bare matrix products
of one epoch, each timed with ``torch.mm`` at the exact shape and layout the
training step uses (batch 256): per layer the forward ``addmm(b, x, W.t())``,
the weight gradient ``g.t() @ x`` and the input gradient ``g @ W`` (none for
the first layer, whose input is data). FLOPs per epoch are therefore
``(6 * params - 2 * params_fc1) * n_train`` rather than the usual ``6 * params *
n_train``; both are reported. On a GPU the memory floor is the bytes one step
must move (weights read twice and written once with their gradients and the
optimizer's read-modify-write, activations written and read back) over the
measured copy bandwidth (a copy of 1 GiB); the floor is the larger of the
two. On a GPU each matmul is timed with CUDA events over replays of a CUDA
graph of many launches (``benchmarks/cuda_timing.py``).

Achieved is the epoch time of :func:`train_network` (pack 1) and of
:func:`train_pack` at the pack size a sweep's ``pack: auto`` would use here
(from the GPU's memory, read through NVML, or the CPU's step FLOPs), per
network; efficiency is floor / achieved.

    python -m benchmarks.roofline [--quick]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from benchmarks.common import (
    BATCH,
    N_CLASSES,
    N_FEATURES,
    NETWORKS,
    QUICK_STEPS,
    Mode,
    best_seconds,
    busy_warning,
    device,
    layerswap_steps,
    mnist,
    mnist_shape,
    network_spec,
    parse_mode,
    publish,
    sweep_pack,
    table,
)
from benchmarks.cuda_timing import copy_bandwidth, graph_seconds
from trainables.data.datasets import prepare_dataset

MIN_SAMPLE_SECONDS = 0.005
"""Each timing sample repeats a small matmul until it lasts about this long (s)."""


@dataclass(frozen=True)
class Matmul:
    """One matrix product of a training step: ``label``, FLOPs and the measured seconds."""

    label: str
    flops: int
    seconds: float

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def time_matmul(run: Callable[[], torch.Tensor], where: torch.device, repeats: int) -> float:
    """Shortest seconds of one ``run()``, repeated inside each sample to outlast timer noise.

    On a GPU the repeats are one CUDA graph's replays timed with CUDA events.
    """
    once = best_seconds(run, 3, where)
    inner = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(once, 1e-9)))
    if where.type == "cuda":
        return graph_seconds(run, inner, repeats)
    return best_seconds(lambda: [run() for _ in range(inner)], repeats, where) / inner


def step_matmuls(widths: tuple[int, ...], pack: int, where: torch.device, repeats: int) -> list[Matmul]:
    """Every matmul of one training step of ``pack`` networks, timed at its own shape and layout.

    A pack of 1 is :func:`train_network`'s step (``torch.mm``/``addmm`` on
    (out, in) weights); a larger pack is :func:`train_pack`'s (``bmm``/``baddbmm``
    on (K, in, out) weights).
    """
    dims = (N_FEATURES, *widths, N_CLASSES)
    products = []
    for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        runs = _layer_products(fan_in, fan_out, pack, where)
        if index == 0:
            del runs["dx"]  # the first layer's input is data: no gradient
        flops = pack * 2 * BATCH * fan_in * fan_out
        for kind, run in runs.items():
            label = f"fc{index + 1} {BATCH}x{fan_in}x{fan_out} {kind}"
            products.append(Matmul(label, flops, time_matmul(run, where, repeats)))
    return products


def _layer_products(
    fan_in: int, fan_out: int, pack: int, where: torch.device
) -> dict[str, Callable[[], torch.Tensor]]:
    """The forward, weight-gradient and input-gradient products of one layer."""
    if pack == 1:
        x, grad = torch.randn(BATCH, fan_in, device=where), torch.randn(BATCH, fan_out, device=where)
        weight, bias = torch.randn(fan_out, fan_in, device=where), torch.randn(fan_out, device=where)
        return {
            "fwd": lambda: torch.addmm(bias, x, weight.t()),
            "dW": lambda: grad.t().mm(x),
            "dx": lambda: grad.mm(weight),
        }
    x = torch.randn(pack, BATCH, fan_in, device=where)
    grad = torch.randn(pack, BATCH, fan_out, device=where)
    weight_t = torch.randn(pack, fan_in, fan_out, device=where)
    bias = torch.randn(pack, 1, fan_out, device=where)
    return {
        "fwd": lambda: torch.baddbmm(bias, x, weight_t),
        "dW": lambda: torch.bmm(x.transpose(1, 2), grad),
        "dx": lambda: torch.bmm(grad, weight_t.transpose(1, 2)),
    }


def measure(name: str, widths: tuple[int, ...], mode: Mode, where: torch.device) -> dict[str, Any]:
    data = mnist(where)
    n_train = data.x_train.shape[0]
    steps_per_epoch = n_train / BATCH
    flops_epoch = steps_per_epoch * mnist_shape(widths).step_flops
    params = mnist_shape(widths).parameters
    bandwidth = copy_bandwidth(where, mode.pick(5, 20)) if where.type == "cuda" else None
    spec = replace(network_spec(widths), epochs=1, checkpoints=(0, 1))
    steps = mode.pick(QUICK_STEPS[name], math.ceil(steps_per_epoch))
    packs = []
    for pack in sorted({1, sweep_pack(widths, where)}):
        products = step_matmuls(widths, pack, where, mode.pick(5, 20))
        matmul_floor = steps_per_epoch * sum(p.seconds for p in products) / pack
        memory_floor = steps_per_epoch * mnist_shape(widths).step_bytes / bandwidth if bandwidth else 0.0
        floor = max(matmul_floor, memory_floor)
        achieved = n_train / layerswap_steps(spec, data, steps, pack)  # all K networks share the time
        packs.append({
            "pack": pack,
            "matmul_floor_epoch_seconds": matmul_floor,
            "memory_floor_epoch_seconds": memory_floor,
            "floor_epoch_seconds": floor,
            "achieved_epoch_seconds": achieved,
            "efficiency": floor / achieved,
            "peak_gflops_at_shapes": flops_epoch / matmul_floor / 1e9,
            "achieved_gflops": flops_epoch / achieved / 1e9,
            "matmuls": [{"label": p.label, "flops": p.flops, "seconds": p.seconds, "gflops": p.gflops}
                        for p in products],
        })
    print(f"  {name}: done", flush=True)
    return {
        "widths": list(widths),
        "params": params,
        "flops_per_epoch": flops_epoch,
        "flops_per_epoch_6pn": 6 * params * n_train,
        "copy_bandwidth_bytes_per_second": bandwidth,
        "packs": packs,
    }


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    where = device()
    prepare_dataset("mnist")
    results = {name: measure(name, widths, mode, where) for name, widths in NETWORKS.items()}
    headers = [
        "network", "pack", "GFLOP/epoch", "peak GFLOP/s", "achieved GFLOP/s", "floor s", "achieved s",
        "floor/achieved",
    ]
    rows = [
        [name, p["pack"], r["flops_per_epoch"] / 1e9, p["peak_gflops_at_shapes"], p["achieved_gflops"],
         p["floor_epoch_seconds"], p["achieved_epoch_seconds"], p["efficiency"]]
        for name, r in results.items()
        for p in r["packs"]
    ]
    text = table(headers, rows)
    text += (
        f"\ndevice {where}, {torch.get_num_threads()} threads; peak = the step's matmuls timed alone at "
        "their shapes (batch 256; bmm at the pack's shapes for pack > 1); seconds per network-epoch"
    )
    publish("roofline", "roofline: one epoch against the matmul floor", mode, text,
            {"device": str(where), "networks": results}, warning)


if __name__ == "__main__":
    main()
