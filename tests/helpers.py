"""Helpers shared by the tests (imported as ``from tests.helpers import ...``)."""

from __future__ import annotations

from pathlib import Path


def lr_grid(store: Path, lrs, **overrides) -> dict:
    """The tiny config with a learning-rate axis (its optimizer block names no lr)."""
    axis = {"optimizer": {"name": "sgd"}, "grid": {"optimizer.lr": list(lrs)}}
    return tiny_raw_config(store, **{**axis, **overrides})


def tiny_raw_config(store: Path, **overrides) -> dict:
    raw = {
        "name": "tiny",
        "dataset": "synthetic",
        "model": "mlp",
        "widths": [[16, 8], [12]],
        "seeds": 2,
        "epochs": 3,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "checkpoints": [0, 1, 3],
        "swaps": ["reinit", "rerandomize", "transplant"],
        # CPU trials: a trial given a GPU share fails where torch sees no CUDA device, and on a
        # GPU machine weights trained on the GPU would not match the CPU ones the tests compute.
        "resources": {"cpu_per_trial": 0.5, "gpu_per_trial": 0},
        "store": str(store),
    }
    raw.update(overrides)
    return raw


def ray_processes_of(pid: int) -> list[str]:
    """Command lines of live processes of a Ray session started by process ``pid`` (Ray names
    its session directory ``session_<date>_<time>_<pid>``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"_{pid}/" in cmdline or f"_{pid} " in cmdline:
            if "session_" in cmdline:
                found.append(cmdline)
    return found
