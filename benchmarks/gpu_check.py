"""A GPU self-check that needs only torch: is this GPU ready for layerswap, and how fast is it?

    python -m benchmarks gpu_check            # on a machine with a CUDA GPU, < 3 minutes
    python -m benchmarks gpu_check --smoke    # the same checks, tiny, on the CPU (for tests)

Imports torch, numpy and layerswap's trainer modules (``trainables``), never Ray,
W&B or the orchestrator, so it runs on a GPU box that has only torch, numpy,
pyarrow and safetensors. Without CUDA (and without ``--smoke``) it exits with one
line. It reports:

- the device, driver and torch/CUDA/cuBLAS versions, and a real matmul against
  float64 on the CPU;
- host syncs inside the training step, eager and replayed from a CUDA graph
  (``torch.cuda.set_sync_debug_mode``; must be 0);
- packed training throughput of the seed network (784-2048-1024-512-256-10,
  batch 256, SGD) at K = 1, 2, 8 in fp32, tf32 and bf16, eager steps and steps
  replayed from CUDA graphs (``trainables/train/cuda_graphs.py``, what trials use
  on a GPU), as samples/s and as the fraction of the matmul floor (the step's
  FLOPs at the measured peak of a large matmul in that precision) and of the
  HBM floor (the step's bytes at the measured copy bandwidth), for the faster;
- the measured peak memory of a K = 8 trial against the sweep's estimate
  (``trainables/train/pack_shape.py``), and what the process holds beyond its tensors
  (NVML's figure for this process minus torch's reserved bytes): the figure
  ``CUDA_PROCESS_BYTES`` in orchestrator/run/packing.py should hold;
- run-to-run bit-identity of packed training, graphed training against eager
  (bit-identical, with a short last batch and over enough epochs that its graph
  replays too), and the packed-vs-unpacked weight difference.

One table on stdout, everything in ``benchmarks/results/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.cuda_timing import copy_bandwidth, event_seconds
from trainables.data.tensors import DatasetTensors
from trainables.models.mlp import StackedMLP
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.cuda_graphs import WARMUP_STEPS, Step, training_step
from trainables.train.device import cublas_version, make_deterministic
from trainables.train.gpu_memory import driver_version
from trainables.train.network import initial_model, train_network, train_step
from trainables.train.optimizer import make_optimizer
from trainables.train.pack import TrainedNetwork, pack_step, train_pack
from trainables.train.pack_shape import PackShape
from trainables.train.precision import PRECISIONS, training_precision

RESULTS = Path(__file__).resolve().parent / "results"
PACKS = (1, 2, 8)


@dataclass(frozen=True)
class Size:
    """What one run measures: the network, the data, and how many steps each timing takes."""

    widths: tuple[int, ...]
    n_features: int
    n_train: int
    n_test: int
    steps: int
    matmul: int


FULL = Size((2048, 1024, 512, 256), 784, 60_000, 10_000, steps=50, matmul=8192)
SMOKE = Size((32, 16), 64, 1024, 256, steps=3, matmul=256)


def spec(size: Size, seed: int, precision: str = "fp32", epochs: int = 1) -> TrialSpec:
    return TrialSpec(
        dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=size.widths, seed=seed,
        epochs=epochs, batch_size=256, optimizer=OptimizerSpec("sgd", 0.01), checkpoints=(0, epochs),
        precision=precision,
    )


def random_data(size: Size, device: torch.device) -> DatasetTensors:
    generator = torch.Generator().manual_seed(0)

    def features(n: int) -> torch.Tensor:
        return torch.randn(n, size.n_features, generator=generator).to(device)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, 10, (n,), generator=generator).to(device)

    return DatasetTensors(features(size.n_train), labels(size.n_train), features(size.n_test),
                          labels(size.n_test), 10)


def seconds(run: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Shortest wall seconds of ``run()`` (CUDA events on a GPU) after one warm-up."""
    if device.type == "cuda":
        return event_seconds(run, repeats)
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def process_nvml_bytes() -> int | None:
    """GPU memory NVML counts for this process, or None where NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == os.getpid() and process.usedGpuMemory is not None:
                    return int(process.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing, or a MIG/container view without per-process figures
        return None
    return None


def matmul_check(size: Size, device: torch.device) -> dict[str, Any]:
    """A real matmul on the device against float64 on the CPU, and the peak matmul FLOP/s per precision."""
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(512, 512, generator=generator), torch.randn(512, 512, generator=generator)
    with training_precision("fp32"):
        got = (a.to(device) @ b.to(device)).cpu().double()
    error = ((got - a.double() @ b.double()).abs().max() / (a.abs().max() * b.abs().max())).item()
    n = size.matmul
    x, y = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    peaks = {}
    for precision in PRECISIONS:
        with training_precision(precision):
            if precision == "bf16":
                xb, yb = x.bfloat16(), y.bfloat16()
                spent = seconds(lambda xb=xb, yb=yb: xb @ yb, device)
            else:
                spent = seconds(lambda: x @ y, device)
        peaks[precision] = 2 * n**3 / spent
    return {"relative_error": error, "ok": error < 1e-5, "peak_flops": peaks}


def pack_of(size: Size, data: DatasetTensors, device: torch.device, pack: int, precision: str,
            graphs: bool) -> Step:
    """The training step of ``pack`` seed-size networks, as trials run it (graphed when ``graphs``)."""
    specs = [spec(size, seed, precision) for seed in range(pack)]
    models = [initial_model(s, (size.n_features,), 10).to(device) for s in specs]
    if pack == 1:
        model = models[0]
        optimizer = make_optimizer(specs[0].optimizer, list(model.parameters()))

        def eager(batch: torch.Tensor) -> torch.Tensor:
            return train_step(model, optimizer, data, batch[0], precision)
    else:
        stack = StackedMLP.of(models)
        optimizer = make_optimizer(specs[0].optimizer, stack.parameters())
        eager = partial(pack_step, stack, optimizer, data, precision=precision)
    return training_step(eager, optimizer, device, graphs)


def count_syncs(size: Size, data: DatasetTensors, device: torch.device, graphs: bool) -> float | None:
    """Host syncs per training step of a pack of 2 (None on a CPU, where there is nothing to wait for).

    Counted after the steps that set up optimizer state (and, with ``graphs``, after the capture).
    """
    if device.type != "cuda":
        return None
    step = pack_of(size, data, device, 2, "fp32", graphs)
    batch = torch.randint(0, size.n_train, (2, 256), device=device)
    for _ in range(WARMUP_STEPS + 1):
        step(batch)
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(size.steps):
                step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs) / size.steps


def throughput(size: Size, data: DatasetTensors, device: torch.device, pack: int, precision: str,
               graphs: bool) -> float:
    """Training samples/s of ``pack`` networks together (all networks' samples), ``size.steps`` steps.

    The unmeasured first run holds the eager warm-up steps and the capture.
    """
    step = pack_of(size, data, device, pack, precision, graphs)
    batches = torch.randint(0, size.n_train, (size.steps, pack, 256), device=device)

    def run() -> None:
        for batch in batches:
            step(batch)

    with training_precision(precision):
        spent = seconds(run, device, repeats=2)
    return pack * 256 * size.steps / spent


def peak_memory(size: Size, device: torch.device, shape: PackShape) -> dict[str, Any]:
    """A K = 8 trial's measured peak tensor memory against the estimate, and the process overhead."""
    if device.type != "cuda":
        return {"measured_bytes": None, "estimate_bytes": shape.memory().peak(8),
                "process_overhead_bytes": None}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    train_pack([spec(size, seed) for seed in range(8)], random_data(size, device), device)
    measured = torch.cuda.max_memory_allocated(device)
    held = process_nvml_bytes()
    overhead = held - torch.cuda.memory_reserved(device) if held is not None else None
    return {"measured_bytes": measured, "estimate_bytes": shape.memory().peak(8),
            "process_overhead_bytes": overhead}


def same_weights(first: list[TrainedNetwork], second: list[TrainedNetwork]) -> bool:
    return all(
        torch.equal(a.model.state_dict()[key], b.model.state_dict()[key])
        for a, b in zip(first, second, strict=True) for key in a.model.state_dict()
    )


def identity_checks(size: Size, device: torch.device) -> dict[str, Any]:
    """Packed training twice (bit-identical?), graphed against eager (bit-identical?, on a GPU), and
    against each network trained alone (max difference)."""
    small = replace(size, n_train=256 * size.steps)
    data = random_data(small, device)
    specs = [spec(small, seed) for seed in range(2)]
    first, second = train_pack(specs, data, device), train_pack(specs, data, device)
    difference = 0.0
    for packed, one in zip(first, specs, strict=True):
        alone = train_network(one, data, device).model.state_dict()
        for key, tensor in packed.model.state_dict().items():
            difference = max(difference, (tensor - alone[key]).abs().max().item())
    on_gpu = device.type == "cuda"
    return {"run_to_run_bit_identical": same_weights(first, second),
            "graphed_vs_eager_bit_identical": graphed_vs_eager(size, device) if on_gpu else None,
            "packed_vs_unpacked_max_abs": difference}


def graphed_vs_eager(size: Size, device: torch.device) -> bool:
    """Do CUDA-graph steps train the eager steps' weights bit for bit, alone and packed, in every precision?

    With a short last batch (its own graph) and ``WARMUP_STEPS + 2`` epochs, so
    that graph is captured and replayed too.
    """
    ragged = replace(size, n_train=256 * size.steps + 100)
    data = random_data(ragged, device)
    for precision in PRECISIONS:
        pack = [spec(ragged, seed, precision, WARMUP_STEPS + 2) for seed in range(2)]
        if not same_weights(train_pack(pack, data, device, graphs=True),
                            train_pack(pack, data, device, graphs=False)):
            return False
        if not same_weights([train_network(pack[0], data, device, graphs=True)],
                            [train_network(pack[0], data, device, graphs=False)]):
            return False
    return True


def describe(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(name=properties.name, total_bytes=properties.total_memory,
                    capability=f"{properties.major}.{properties.minor}", driver=driver_version(),
                    cublas=cublas_version())
    else:
        info.update(name="cpu (smoke run)", threads=torch.get_num_threads())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the check itself")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json",
                        help="where to write the JSON")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: torch sees no CUDA device (torch {torch.__version__}, {build}); run it on a GPU "
              "machine (--smoke runs the same checks tiny on the CPU)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    make_deterministic()
    device = torch.device("cpu") if args.smoke else torch.device("cuda", 0)
    size = SMOKE if args.smoke else FULL
    shape = PackShape("mlp", size.widths, (size.n_features,), 10, size.n_train, size.n_test, 256, 2,
                      optimizer_slots=0)
    data = random_data(size, device)
    matmul = matmul_check(size, device)
    bandwidth = copy_bandwidth(device, 5) if device.type == "cuda" else None
    rows = []
    for precision in PRECISIONS:
        for pack in PACKS:
            eager = throughput(size, data, device, pack, precision, graphs=False)
            graphed = None
            if device.type == "cuda":
                graphed = throughput(size, data, device, pack, precision, graphs=True)
            step_seconds = pack * 256 / max(eager, graphed or 0.0)
            matmul_floor = pack * shape.step_flops / matmul["peak_flops"][precision]
            hbm_floor = pack * shape.step_bytes / bandwidth if bandwidth else None
            rows.append({
                "precision": precision, "pack": pack, "samples_per_second": eager,
                "graphed_samples_per_second": graphed,
                "matmul_floor_fraction": matmul_floor / step_seconds,
                "hbm_floor_fraction": hbm_floor / step_seconds if hbm_floor else None,
            })
    del data
    sync_data = random_data(size, device)
    result = {
        "machine": describe(device), "smoke": args.smoke, "matmul": matmul,
        "copy_bandwidth_bytes_per_second": bandwidth,
        "host_syncs_per_step": count_syncs(size, sync_data, device, graphs=False),
        "host_syncs_per_graphed_step": count_syncs(size, sync_data, device, graphs=True),
        "memory": peak_memory(size, device, shape), **identity_checks(size, device), "throughput": rows,
    }
    result["seconds"] = time.perf_counter() - started
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"(written to {args.out})")
    return 0


def report(result: dict[str, Any]) -> str:
    machine, memory = result["machine"], result["memory"]

    def gib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**30:.2f} GiB"

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.0f}%"

    def count(value: float | None) -> str:
        return "n/a" if value is None else f"{value:g}"

    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    graphed_identity = {True: "bit-identical", False: "DIFFERENT", None: "n/a"}[
        result["graphed_vs_eager_bit_identical"]]
    lines = [
        f"device   {machine['name']}, driver {machine.get('driver')}, torch {machine['torch']}, "
        f"CUDA {machine['cuda']}, cuBLAS {machine.get('cublas')}",
        f"matmul   {'ok' if result['matmul']['ok'] else 'WRONG'} (relative error "
        f"{result['matmul']['relative_error']:.1e} against float64)",
        f"syncs    {count(result['host_syncs_per_step'])} host syncs per eager training step, "
        f"{count(result['host_syncs_per_graphed_step'])} per graphed step (must be 0)",
        f"memory   K=8 peak {gib(memory['measured_bytes'])} measured, "
        f"{gib(memory['estimate_bytes'])} estimated; "
        f"process overhead {gib(memory['process_overhead_bytes'])}",
        f"identity run to run {'bit-identical' if result['run_to_run_bit_identical'] else 'DIFFERENT'}; "
        f"graphed vs eager {graphed_identity}; "
        f"packed vs unpacked max |diff| {result['packed_vs_unpacked_max_abs']:.1e}",
        "",
        f"{'precision':<10}{'K':>3}{'eager samples/s':>17}{'graphed samples/s':>19}"
        f"{'matmul floor':>14}{'HBM floor':>11}",
    ]
    for row in result["throughput"]:
        lines.append(f"{row['precision']:<10}{row['pack']:>3}{rate(row['samples_per_second']):>17}"
                     f"{rate(row['graphed_samples_per_second']):>19}"
                     f"{percent(row['matmul_floor_fraction']):>14}{percent(row['hbm_floor_fraction']):>11}")
    lines.append(f"\nin {result['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
