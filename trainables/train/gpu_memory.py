"""GPUs as NVML sees them (``nvidia-ml-py``), never through torch: the process that asks (the sweep's
driver, a probe task) creates no CUDA context, holds no GPU memory and needs no torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_COMPUTE_MODE = 0
"""NVML_COMPUTEMODE_DEFAULT: several processes may share the GPU (fractional trials need it)."""


@dataclass(frozen=True)
class GpuMemory:
    """One GPU as NVML sees it: ``free`` and ``total`` bytes, and its compute mode."""

    index: int
    name: str
    free: int
    total: int
    compute_mode: int

    @property
    def shared_mode(self) -> bool:
        return self.compute_mode == DEFAULT_COMPUTE_MODE


def visible_gpu_indices(count: int) -> list[int]:
    """NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible (all when unset)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    indices = []
    for item in visible.split(","):
        item = item.strip()
        if not item.isdigit():
            return list(range(count))  # UUIDs or MIG names: NVML's order is the best we have
        if int(item) < count:
            indices.append(int(item))
    return indices


def read_gpu_memory() -> tuple[list[GpuMemory], str | None]:
    """(the visible GPUs, None), or ([], why NVML could not tell) — without a CUDA context."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return [], f"NVML: {err}"
    try:
        gpus = []
        for index in visible_gpu_indices(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GpuMemory(
                index, name.decode() if isinstance(name, bytes) else name, int(info.free), int(info.total),
                int(pynvml.nvmlDeviceGetComputeMode(handle)),
            ))
        return gpus, None
    except pynvml.NVMLError as err:
        return [], f"NVML: {err}"
    finally:
        pynvml.nvmlShutdown()


def driver_version() -> str | None:
    """The NVIDIA driver's version from NVML, or None where NVML does not answer (informative only)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - informative only: no NVML, no driver, an old pynvml
        return None
