"""How much memory one trial may use: read from this machine, or from a Ray cluster's nodes.

CPU trials: this machine's RAM for a local sweep, the smallest alive CPU
node's memory (Ray's figure) when joining a cluster. GPU trials: their
``gpu_per_trial`` share of the smallest GPU, read through NVML here for a
local sweep, or on each GPU node by a task that asks for no resources (so it
also runs while the GPUs are busy). No process here creates a CUDA context.
"""

from __future__ import annotations

from collections.abc import Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config import Resources
from orchestrator.packing import (
    MemoryBudget,
    compute_mode_warnings,
    cpu_budget,
    gpu_budget,
    machine_memory_bytes,
)
from trainables.device import GpuMemory, read_gpu_memory

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
