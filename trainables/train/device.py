"""The trial's device: no silent CPU fallback, deterministic kernels, the CUDA versions a trial row
records (GPU memory and the driver's version: :mod:`trainables.train.gpu_memory`)."""

from __future__ import annotations

import os
import socket
import sys
from importlib import metadata

import torch

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
"""cuBLAS workspace setting that makes its matmuls deterministic (set before CUDA starts)."""


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
