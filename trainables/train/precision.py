"""Numeric precision of training matmuls: a spec field, since it changes the weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from trainables.choices import PRECISIONS as PRECISIONS  # re-exported: packed.py checks specs


@contextlib.contextmanager
def training_precision(precision: str) -> Iterator[None]:
    """Around a whole training loop: CUDA fp32 matmuls in TF32 for ``tf32``, IEEE float32 otherwise.

    Set through torch's fp32 precision setting (``torch.backends.cuda.matmul.fp32_precision``),
    which holds for everything in the loop (forward, backward, optimizer step), and
    restored afterwards, so swap evaluation runs in float32. It only affects
    cuBLAS: on a CPU every precision but bf16 is float32.
    """
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


@contextlib.contextmanager
def forward_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Around a forward pass: bfloat16 autocast for ``bf16``, nothing otherwise.

    Autocast's cache of cast weights is off: each weight is cast once per forward
    anyway (so the numbers are the same), and a CUDA graph capture of the step
    must not keep cast tensors beyond it (``trainables/train/cuda_graphs.py``).
    """
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
        return
    yield
