"""The trial's device: no silent CPU fallback, deterministic kernels, versions, GPU memory via NVML.

GPU memory is read through NVML (``nvidia-ml-py``), never through torch, so the
process that asks (the sweep's driver, a probe task) creates no CUDA context
and holds no GPU memory.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from importlib import metadata

import torch

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS workspace setting that makes its matmuls deterministic (set before CUDA starts)."""

DEFAULT_COMPUTE_MODE = 0
"""NVML_COMPUTEMODE_DEFAULT: several processes may share the GPU (fractional trials need it)."""


class DeviceError(RuntimeError):
    """A trial cannot use the device it was given; the message is one line."""


def trial_device(gpu_share: float, node: str = "") -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES) for a GPU share, else the CPU.

    A trial given a GPU share that sees no CUDA device fails here, naming the
    node and the torch build, instead of training on the CPU unnoticed.
    """
    if gpu_share <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(
            f"{node or socket.gethostname()}: this trial was given {gpu_share:g} GPU but "
            f"torch.cuda.is_available() is False (torch {torch.__version__}, {build}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}); "
            "check the node's NVIDIA driver and torch build (layerswap preflight), or set gpu_per_trial: 0"
        )
    return torch.device("cuda", 0)


def make_deterministic() -> None:
    """Deterministic cuBLAS and torch algorithms where torch offers them, for this process.

    ``CUBLAS_WORKSPACE_CONFIG`` only counts if set before CUDA starts: call
    this first in a trial. Ops without a deterministic kernel warn instead of
    failing; uninitialised memory is not filled (it costs time and our
    kernels never read it).

    ``torch.use_deterministic_algorithms`` would also set Inductor's ``deterministic``, importing
    ``torch._inductor`` and Dynamo to do so: 3 s of every worker's start, for a compiler no trial
    uses. The flags are set as it sets them, and Inductor's is set only should it be imported (now,
    or later through its environment variable).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("TORCHINDUCTOR_DETERMINISTIC", "1")
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True
    torch.utils.deterministic.fill_uninitialized_memory = False


def cublas_version() -> str | None:
    """The version of the cuBLAS wheel torch loads (``nvidia-cublas*``), None when there is none."""
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("nvidia-cublas"):
            return dist.version
    return None


def cuda_columns(device: torch.device) -> dict[str, str | None]:
    """The trial row's ``cuda_version`` and ``cublas_version``: None on a CPU."""
    if device.type != "cuda":
        return {"cuda_version": None, "cublas_version": None}
    return {"cuda_version": torch.version.cuda, "cublas_version": cublas_version()}


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
