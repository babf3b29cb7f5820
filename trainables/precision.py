"""Numeric precision of training matmuls: a spec field, since it changes the weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from trainables.choices import PRECISIONS as PRECISIONS  # re-exported: packed.py checks specs


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed matmuls at ``precision``: fp32, tf32 (CUDA matmuls only) or bf16 autocast."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if precision == "tf32" and device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        return
    yield
