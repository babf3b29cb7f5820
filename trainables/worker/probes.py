"""Probes that run on each Ray node for ``layerswap preflight``: versions, CUDA, the store.

Each is a plain function the driver turns into a Ray task pinned to a node
(:mod:`orchestrator.run.preflight`); what fails is the probe's answer, never an
exception.
"""

from __future__ import annotations

import platform
import socket
import uuid
from dataclasses import dataclass

import ray

from trainables.store import Store, layout
from trainables.store.uri import redact_secrets
from trainables.train.gpu_memory import driver_version

PROBE_DIR = layout.PREFLIGHT_DIR
"""Where probes write into the store (a name starting with ``_``: store readers never see it)."""


@dataclass(frozen=True)
class Versions:
    python: str
    ray: str
    torch: str
    hostname: str

    @classmethod
    def here(cls) -> Versions:
        import torch

        return cls(platform.python_version(), ray.__version__, torch.__version__, socket.gethostname())


def cuda_check() -> str:
    """Runs in a task holding a GPU: a 512x512 matmul on it against float64 on the CPU."""
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"FAIL: torch.cuda.is_available() is False (torch {torch.__version__}, {build})"
    device = torch.device("cuda", 0)
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=generator), torch.randn(512, 512, generator=generator)
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        got = (a.to(device) @ b.to(device)).cpu()
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous
    error = ((got.double() - a.double() @ b.double()).abs().max() / (a.abs().max() * b.abs().max())).item()
    verdict = "ok" if error < 1e-5 else "FAIL: the matmul is wrong"
    return (
        f"{verdict}: {torch.cuda.get_device_name(device)}, driver {driver_version() or '?'}, "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, matmul relative error {error:.1e}"
    )


def probe_node(store_uri: str | None, token_relpath: str | None, token: bytes) -> dict:
    """Runs on one node: its versions, CUDA devices and the store probe."""
    import torch

    node_id = ray.get_runtime_context().get_node_id()
    return {
        "versions": Versions.here(),
        "cuda_devices": torch.cuda.device_count(),
        "store": probe_store(store_uri, token_relpath, token, node_id) if store_uri else "-",
    }


def probe_store(store_uri: str, token_relpath: str | None, token: bytes, node_id: str) -> str:
    step = "open"
    try:
        store = Store.open(store_uri)
        if token_relpath is not None:
            step = "read the driver's probe file"
            if not store.exists(token_relpath) or store.read_bytes(token_relpath) != token:
                return (
                    f"FAIL: does not see the probe file the driver wrote ({store.path(token_relpath)}): "
                    "this node's store is not the driver's (a node-local path?)"
                )
        mine, payload = f"{PROBE_DIR}/{node_id[:12]}-{uuid.uuid4().hex}", uuid.uuid4().bytes
        step = "write"
        store.write_bytes(mine, payload)
        step = "read back"
        if store.read_bytes(mine) != payload:
            return f"FAIL: read back other bytes than written to {store.path(mine)}"
        step = "delete"
        store.fs.delete_file(store.path(mine))
    except Exception as err:  # whatever fails is the probe's answer
        return f"FAIL: {step}: {type(err).__name__}: {redact_secrets(str(err))}"
    return "ok"
