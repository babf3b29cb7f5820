"""Time to the first result: a one-network sweep against a plain PyTorch script, and a 4-seed job
end to end against the seed notebook's way.

Every figure is the wall time of a fresh process from its start to its exit, as a
user waits for it at the prompt:

- ``tiny sweep``: ``layerswap sweep`` of one network (synthetic data, ``seeds: 1``,
  1 epoch, ``widths: [[8]]``, every swap kind) into a fresh store, Ray started by
  the sweep, the report written; its last line (the phases) is kept.
- ``plain script``: a PyTorch script doing the same training: import torch, build
  the same network on the same data, train the epoch, evaluate on the test set.
- ``4 seeds: layerswap``: ``layerswap sweep`` of 4 seeds x 2 epochs of
  784-256-128-64-32-10 on MNIST (SGD lr 0.01, batch 256, checkpoints every
  epoch, every swap kind the notebook measured: reinit, rerandomize,
  transplant; weight movement too), the report written.
- ``4 seeds: notebook's way``: the same job the notebook's way
  (:mod:`benchmarks.notebook_way`: DataLoader training, a deep copy per swap).

The cases run interleaved, ``--repeat`` times (default 3); the table gives the
median and range of each, and the end-to-end ratio is the notebook's median over
layerswap's. ``--quick``: one run each, the 4-seed job cut to 1 seed x 1 epoch.

    python -m benchmarks first_result [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import REPO, Mode, busy_warning, publish, table
from benchmarks.notebook_way import NOTEBOOK_SWAPS
from trainables.data.datasets import prepare_dataset

PLAIN_SCRIPT = textwrap.dedent("""
    import torch
    from torch import nn
    from torch.nn import functional as F
    from trainables.data.synthetic import synthetic

    data = synthetic()
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x_train.shape[1], 8), nn.ReLU(), nn.Linear(8, data.n_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in torch.randperm(len(y_train)).split(64):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
    print(f"test_acc {accuracy:.4f}")
""")

ALL_SWAPS = ["reinit", "rerandomize", "transplant", "interpolate"]


def tiny_config(store: Path) -> dict[str, Any]:
    return {
        "name": "first-result", "dataset": "synthetic", "model": "mlp", "widths": [[8]], "seeds": 1,
        "epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.1}, "swaps": ALL_SWAPS,
        "store": str(store),
    }


def seeds_config(store: Path, seeds: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "four-seeds", "dataset": "mnist", "model": "mlp", "widths": [[256, 128, 64, 32]],
        "seeds": seeds, "epochs": epochs, "batch_size": 256, "optimizer": {"name": "sgd", "lr": 0.01},
        "checkpoints": list(range(epochs + 1)), "swaps": list(NOTEBOOK_SWAPS),
        "resources": {"cpu_per_trial": 1, "gpu_per_trial": 0}, "store": str(store),
    }


def timed(argv: list[str]) -> tuple[float, str]:
    """(wall seconds from start to exit, last line of stdout) of a fresh Python process; it must succeed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    return seconds, lines[-1] if lines else ""


def sweep(scratch: Path, name: str, config: dict[str, Any]) -> tuple[float, str]:
    """A ``layerswap sweep`` of ``config`` into a fresh store under ``scratch``."""
    store = scratch / name
    path = scratch / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "store": str(store)}))
    return timed(["-m", "orchestrator.cli", "sweep", str(path)])


def summary(times: list[float]) -> list[Any]:
    return [len(times), statistics.median(times), min(times), max(times)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run each, the 4-seed job as 1 seed x 1 epoch")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (default 3)")
    parser.add_argument("--threads", type=int, default=2,
                        help="accepted as every benchmark does; each timed process uses its own defaults")
    args = parser.parse_args(argv)
    mode = Mode(args.quick)
    repeat = 1 if mode.quick else max(1, args.repeat)
    seeds, epochs = (1, 1) if mode.quick else (4, 2)
    warning = busy_warning()
    prepare_dataset("mnist")
    load_before = os.getloadavg()[0]
    cases: dict[str, list[float]] = {"tiny sweep": [], "plain script": [],
                                     f"{seeds} seeds: layerswap": [], f"{seeds} seeds: notebook's way": []}
    phase_lines: list[str] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="layerswap-first-") as scratch_dir:
        scratch = Path(scratch_dir)
        for run in range(repeat):
            loads.append(os.getloadavg()[0])
            seconds, line = sweep(scratch, f"tiny-{run}", tiny_config(scratch))
            cases["tiny sweep"].append(seconds)
            phase_lines.append(line)
            cases["plain script"].append(timed(["-c", PLAIN_SCRIPT])[0])
            cases[f"{seeds} seeds: layerswap"].append(
                sweep(scratch, f"seeds-{run}", seeds_config(scratch, seeds, epochs))[0]
            )
            notebook = ["-m", "benchmarks.notebook_way", "--seeds", str(seeds), "--epochs", str(epochs),
                        "--swaps", ",".join(NOTEBOOK_SWAPS)]
            cases[f"{seeds} seeds: notebook's way"].append(timed(notebook)[0])
            print(f"  run {run + 1}/{repeat}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in cases.items()),
                  flush=True)
    load_after = os.getloadavg()[0]
    layerswap, notebook = cases[f"{seeds} seeds: layerswap"], cases[f"{seeds} seeds: notebook's way"]
    ratios = [n / s for n, s in zip(notebook, layerswap, strict=True)]
    rows = [[name, *summary(times)] for name, times in cases.items()]
    text = table(["case", "runs", "median s", "min s", "max s"], rows)
    ratio = statistics.median(notebook) / statistics.median(layerswap)
    text += (
        f"\nend to end, {seeds} seeds x {epochs} epochs, swaps {', '.join(NOTEBOOK_SWAPS)}: "
        "the notebook's way takes "
        f"{ratio:.1f}x layerswap's time (medians; per run {min(ratios):.1f}-{max(ratios):.1f}x)"
        f"\ntiny sweep, median {statistics.median(cases['tiny sweep']):.1f} s against the plain script's "
        f"{statistics.median(cases['plain script']):.1f} s; its last line: {phase_lines[-1]}"
        f"\nload average (1 min) {load_before:.2f} before, {load_after:.2f} after"
        f" ({', '.join(f'{load:.2f}' for load in loads)} at each run's start)"
    )
    payload = {
        "repeat": repeat, "seeds": seeds, "epochs": epochs, "cases": cases, "ratios": ratios,
        "phase_lines": phase_lines, "load_before": load_before, "load_after": load_after, "loads": loads,
    }
    title = "first_result: time to the first result, end to end"
    publish("first_result", title, mode, text, payload, warning)


if __name__ == "__main__":
    main()
