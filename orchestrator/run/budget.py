"""How much memory one trial may use: read from this machine, or from a Ray cluster's nodes.

CPU trials: this machine's RAM for a local sweep, the smallest alive CPU
node's memory (Ray's figure) when joining a cluster. GPU trials: their
``gpu_per_trial`` share of the smallest GPU, read through NVML here for a
local sweep, or on each GPU node by a task that asks for no resources (so it
also runs while the GPUs are busy). No process here creates a CUDA context.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config.blocks import Resources
from orchestrator.config.values import ConfigError
from trainables.train.gpu_memory import GpuMemory, read_gpu_memory
from trainables.train.pack_shape import PackShape

GiB = 2**30

CUDA_PROCESS_BYTES = 768 * 2**20
"""Device memory a trial process holds beyond its tensors (CUDA context, cuBLAS workspace,
allocator slack), bytes. Not measured on a GPU yet: ``python -m benchmarks gpu_check``
measures it (``process_overhead_bytes``); put its figure here."""


@dataclass(frozen=True)
class MemoryBudget:
    """The memory one trial may use: ``bytes`` on ``device`` ("cpu" or "cuda"), described by ``source``.

    ``process_bytes`` is what a trial process holds there beyond its tensors.
    """

    device: str
    bytes: int
    source: str
    process_bytes: int = 0



def machine_memory_bytes() -> int:
    """Total physical memory of this machine, bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cpu_budget(node_memory: list[int], local: bool) -> MemoryBudget:
    """A CPU trial's budget: this machine's RAM (``local``) or the smallest worker's memory."""
    smallest = min(node_memory)
    where = "this machine's memory" if local else "the smallest worker's memory (Ray's figure)"
    return MemoryBudget("cpu", smallest, f"{where} is {smallest / GiB:.2f} GiB")


def gpu_budget(gpus: list[GpuMemory], share: float) -> MemoryBudget:
    """A GPU trial's budget: ``share`` of the smallest GPU's total memory, never more than is free."""
    smallest = min(gpus, key=lambda gpu: min(gpu.free, share * gpu.total))
    budget = int(min(smallest.free, min(share, 1.0) * smallest.total))
    source = (
        f"its share ({share:g} of {smallest.name}, {smallest.total / GiB:.1f} GiB, "
        f"{smallest.free / GiB:.1f} GiB free) is {budget / GiB:.2f} GiB"
    )
    return MemoryBudget("cuda", budget, source, CUDA_PROCESS_BYTES)


def compute_mode_warnings(gpus: list[GpuMemory], share: float) -> list[str]:
    """Fractional trials share a GPU only in NVML's default compute mode."""
    return [
        f"warning: GPU {gpu.index} ({gpu.name}) is not in the default compute mode "
        f"(mode {gpu.compute_mode}): trials sharing it ({share:g} GPU each) may fail to start"
        for gpu in gpus
        if not gpu.shared_mode and share < 1
    ]


def trial_need_bytes(shape: PackShape, pack: int, budget: MemoryBudget) -> int:
    return budget.process_bytes + shape.memory().peak(pack)


def check_memory(shape: PackShape, pack: int, budget: MemoryBudget | None, what: str | None = None) -> None:
    """ConfigError with both figures (GiB) when a trial of ``pack`` networks cannot fit ``budget``;
    the line starts with ``what`` (the configuration), by default its widths."""
    if budget is None:
        return
    need = trial_need_bytes(shape, pack, budget)
    if need <= budget.bytes:
        return
    memory = "GPU memory" if budget.device == "cuda" else "memory"
    fix = "raise resources.gpu_per_trial, " if budget.device == "cuda" else ""
    what = what or f"widths {list(shape.widths)}"
    raise ConfigError(
        f"{what}: a trial of {pack} network(s) needs about {need / GiB:.2f} GiB of "
        f"{memory} but {budget.source}; {fix}lower pack or batch_size, or use smaller widths"
    )


NODE_ANSWER_SECONDS = 60.0


def local_budget(resources: Resources, log: Callable[[str], None]) -> MemoryBudget | None:
    """One trial's budget on this machine (before Ray starts); None when a GPU's memory is unknown."""
    if resources.gpu_per_trial <= 0:
        return cpu_budget([machine_memory_bytes()], local=True)
    gpus, why = read_gpu_memory()
    return _gpu(gpus, why, resources.gpu_per_trial, log)


def cluster_budget(resources: Resources, log: Callable[[str], None]) -> MemoryBudget | None:
    """One trial's budget on the connected Ray cluster's smallest fitting node."""
    alive = [node for node in ray.nodes() if node["Alive"]]
    if resources.gpu_per_trial <= 0:
        memory = [
            int(node["Resources"].get("memory", 0)) for node in alive
            if node["Resources"].get("CPU", 0) >= resources.cpu_per_trial
        ]
        return cpu_budget(memory, local=False) if memory else None
    gpu_nodes = [node for node in alive if node["Resources"].get("GPU", 0) > 0]
    read = ray.remote(read_gpu_memory)
    refs = [
        read.options(
            num_cpus=0, max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote()
        for node in gpu_nodes
    ]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=NODE_ANSWER_SECONDS)
    gpus: list[GpuMemory] = []
    why = "no GPU node answered" if refs else "no alive node has a GPU"
    for ref in ready:
        found, problem = ray.get(ref)
        gpus.extend(found)
        why = problem or why
    return _gpu(gpus, why, resources.gpu_per_trial, log)


def _gpu(
    gpus: list[GpuMemory], why: str | None, share: float, log: Callable[[str], None]
) -> MemoryBudget | None:
    if not gpus:
        log(f"GPU memory unknown ({why}): not checked, and pack: auto trains one network per trial")
        return None
    for line in compute_mode_warnings(gpus, share):
        log(line)
    return gpu_budget(gpus, share)
