"""Timing on a GPU with CUDA events (torch only: ``gpu_check`` imports it on a torch-only machine).

A small kernel is timed as replays of a CUDA graph holding ``inner`` launches,
so launch overhead and host timers do not inflate it; bandwidth is a copy of
at least 1 GiB, well beyond any cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

COPY_BYTES = 2**30


def graph_seconds(run: Callable[[], object], inner: int, repeats: int) -> float:
    """Shortest seconds of one ``run()``: ``inner`` runs captured in a CUDA graph, replayed ``repeats`` times.

    ``run`` must only launch kernels on tensors allocated before (no host syncs).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graph asks
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            run()
    return event_seconds(graph.replay, repeats) / inner


def event_seconds(run: Callable[[], object], repeats: int) -> float:
    """Shortest seconds of ``run()`` between two CUDA events, over ``repeats`` runs after one warm-up."""
    run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return min(times)


def copy_bandwidth(device: torch.device, repeats: int, nbytes: int = COPY_BYTES) -> float:
    """Device memory bandwidth in bytes/s: a copy of ``nbytes`` (read + write), timed with events."""
    source = torch.empty(nbytes // 4, device=device)
    target = torch.empty_like(source)
    seconds = event_seconds(lambda: target.copy_(source), repeats)
    return 2 * nbytes / seconds
