"""Training steps replayed from CUDA graphs: one launch per step instead of one per kernel.

A training step of the MLPs layerswap trains is a few dozen small kernels
(gather, one matmul and activation per layer forward and backward, the loss,
the optimizer's foreach updates). On a modern GPU each kernel of the seed
network at batch 256 runs for microseconds, about as long as it takes the host
to launch it, so an eager step is bound by launches. :class:`GraphedStep`
captures the whole step once per batch shape and replays it.

Why a CUDA graph and not ``torch.compile(mode="reduce-overhead")``: a graph
replays exactly the kernels the eager step launches, on the same addresses, so
the weights it trains are the eager step's bit for bit (``python -m benchmarks
gpu_check`` checks this, and ``tests/test_cuda_graphs.py`` on a GPU machine);
``torch.compile`` fuses kernels, which changes the rounding, and compiles for
tens of seconds in every trial process.

How a step is captured (the PyTorch "whole network capture" recipe):

- the first :data:`WARMUP_STEPS` steps of each batch shape run eagerly on the
  side stream the capture will use, so cuBLAS handles, workspaces and the
  optimizer's state exist before capture. They are real steps of training:
  nothing is run twice and no step is skipped;
- the batch's sample indices are copied into a static buffer before each
  replay; everything else the step reads (data, parameters, optimizer state)
  lives at fixed addresses already;
- the short last batch of an epoch has a graph of its own, sharing the first
  graph's memory pool: the graphs only ever run one after the other on one
  stream, and what one leaves behind that the other may overwrite (activations,
  gradients) is dead between steps.

Used on CUDA devices only: a CPU has no launches to save. Set
``LAYERSWAP_CUDA_GRAPHS=0`` in the workers' environment to train eagerly on a
GPU too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainables.train.optimizer import Optimizer

Step = Callable[[torch.Tensor], torch.Tensor]
"""One training step on the sample indices ``batch``; returns the detached per-network losses."""

WARMUP_STEPS = 3
"""Eager steps of each batch shape before it is captured (PyTorch's recipe uses 3)."""

GRAPHS_ENV = "LAYERSWAP_CUDA_GRAPHS"


def graphs_enabled() -> bool:
    """False when the environment sets ``LAYERSWAP_CUDA_GRAPHS=0``: eager steps on a GPU too."""
    return os.environ.get(GRAPHS_ENV, "1").strip() != "0"


@dataclass(frozen=True)
class CapturedStep:
    """One captured step: replaying ``graph`` reads ``batch`` and writes ``losses``."""

    graph: torch.cuda.CUDAGraph
    batch: torch.Tensor
    losses: torch.Tensor


class GraphedStep:
    """``step`` replayed from a CUDA graph per batch shape, after :data:`WARMUP_STEPS` eager steps of it.

    Called like ``step``. The losses it returns are a static tensor that the
    next call overwrites: use them (enqueue the work that reads them) before
    calling again.
    """

    def __init__(self, step: Step, optimizer: Optimizer, device: torch.device) -> None:
        self._step = step
        self._optimizer = optimizer
        self._device = device
        self._stream = torch.cuda.Stream(device)
        self._eager_calls: dict[tuple[int, ...], int] = {}
        self._captured: dict[tuple[int, ...], CapturedStep] = {}

    @property
    def captured(self) -> tuple[tuple[int, ...], ...]:
        """The batch shapes replayed from a graph so far, in the order they were captured."""
        return tuple(self._captured)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        shape = tuple(batch.shape)
        captured = self._captured.get(shape)
        if captured is None:
            if self._eager_calls.get(shape, 0) < WARMUP_STEPS:
                self._eager_calls[shape] = self._eager_calls.get(shape, 0) + 1
                return self._eager(batch)
            captured = self._capture(batch)
            self._captured[shape] = captured
        captured.batch.copy_(batch)
        captured.graph.replay()
        return captured.losses

    def _eager(self, batch: torch.Tensor) -> torch.Tensor:
        """One step on the side stream, ordered after everything before it and before everything after."""
        current = torch.cuda.current_stream(self._device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            losses = self._step(batch)
        current.wait_stream(self._stream)
        losses.record_stream(current)  # read on the current stream, allocated on the side stream
        return losses

    def _capture(self, batch: torch.Tensor) -> CapturedStep:
        static_batch = batch.clone(memory_format=torch.contiguous_format)
        graph = torch.cuda.CUDAGraph()
        pool = next(iter(self._captured.values())).graph.pool() if self._captured else None
        # Gradients are allocated by the captured backward, from the graph's pool.
        self._optimizer.zero_grad()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=self._stream):
                losses = self._step(static_batch)
        except RuntimeError as err:
            cause = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RuntimeError(
                f"CUDA graph capture of the training step failed ({cause}); "
                f"set {GRAPHS_ENV}=0 in the workers' environment to train with eager steps"
            ) from err
        return CapturedStep(graph, static_batch, losses)


def training_step(
    step: Step, optimizer: Optimizer, device: torch.device, graphs: bool = True
) -> Step:
    """``step`` replayed from CUDA graphs on a CUDA device when ``graphs``; ``step`` itself otherwise."""
    if graphs and device.type == "cuda":
        return GraphedStep(step, optimizer, device)
    return step
