"""`python -m benchmarks gpu_check` runs on a torch-only machine: no Ray, W&B or orchestrator imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

RUN_AND_LIST_IMPORTS = """
import runpy, sys
sys.argv = ["benchmarks", "gpu_check", *sys.argv[1:]]
try:
    runpy.run_module("benchmarks", run_name="__main__")
except SystemExit as done:
    code = done.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"ray", "wandb", "orchestrator"})
print("EXIT", code, "IMPORTED", ",".join(heavy) or "-")
"""


def run_gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_AND_LIST_IMPORTS, *args], capture_output=True, text=True,
                          timeout=600)


def test_smoke_run_checks_everything_on_the_cpu_and_imports_only_torch(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_gpu_check("--smoke", "--out", str(out))
    assert result.stdout.splitlines()[-1] == "EXIT 0 IMPORTED -", result.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["smoke"] is True and record["matmul"]["ok"] is True
    assert record["run_to_run_bit_identical"] is True
    # batched kernels: float tolerance, not bits (on some CPUs they agree to the bit)
    assert 0 <= record["packed_vs_unpacked_max_abs"] < 1e-4
    rows = record["throughput"]
    assert [(row["precision"], row["pack"]) for row in rows] == [
        (precision, pack) for precision in ("fp32", "tf32", "bf16") for pack in (1, 2, 8)
    ]
    assert all(row["samples_per_second"] > 0 and row["matmul_floor_fraction"] > 0 for row in rows)
    # a CPU has no CUDA graphs: the graphed figures are absent, not copies of the eager ones
    assert all(row["graphed_samples_per_second"] is None for row in rows)
    assert record["graphed_vs_eager_bit_identical"] is None and record["host_syncs_per_graphed_step"] is None
    assert "eager samples/s" in result.stdout and "identity run to run bit-identical" in result.stdout
    assert "graphed vs eager n/a" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the full check: nothing to refuse")
def test_without_cuda_it_says_so_in_one_line():
    result = run_gpu_check()
    assert result.stdout.splitlines()[-1] == "EXIT 2 IMPORTED -"
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("gpu_check: torch sees no CUDA device (torch ") and "--smoke" in line
