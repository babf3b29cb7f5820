"""The trial's device: no silent CPU fallback, memory refused before anything runs, precision, provenance."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from orchestrator.config.sweep_config import parse_config
from orchestrator.run.budget import compute_mode_warnings, gpu_budget, machine_memory_bytes
from orchestrator.run.sweep import run_sweep
from tests.helpers import tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.device import cuda_columns
from trainables.train.gpu_memory import GpuMemory
from trainables.train.network import train_network
from trainables.train.optimizer import Optimizer
from trainables.train.pack import train_pack

CPU = torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no CUDA device")
def test_a_trial_given_a_gpu_share_without_cuda_fails_with_one_line(local_ray, tmp_path):
    """conftest's Ray declares a GPU this machine does not have: the trial must not train on the CPU."""
    raw = tiny_raw_config(tmp_path / "store", widths=[[8]], seeds=1, epochs=1, checkpoints=[],
                          resources={"cpu_per_trial": 1, "gpu_per_trial": 0.5})
    lines: list[str] = []
    outcome = run_sweep(parse_config(raw), log=lines.append)
    assert (outcome.completed, outcome.failed) == (0, 1)
    assert any(line.startswith("GPU memory unknown (NVML") for line in lines), lines
    [failed] = [line for line in lines if "FAILED" in line]
    assert "] done 0/1, running 0, pending 0, failed 1 | " in failed
    assert " FAILED (1 networks): DeviceError: " in failed
    assert "this trial was given 0.5 GPU but torch.cuda.is_available() is False" in failed
    assert f"torch {torch.__version__}" in failed
    assert not (tmp_path / "store" / "index" / "trials").exists()


def test_cpu_trials_larger_than_this_machine_are_refused_before_anything_trains(tmp_path):
    ram = machine_memory_bytes()
    width = math.ceil(math.sqrt(2 * ram / 4 / 5))  # 5 float32 copies of ~width^2 weights: twice the RAM
    raw = tiny_raw_config(tmp_path / "store", widths=[[width, width]], seeds=1, epochs=2,
                          checkpoints=[0, 2], resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--no-report"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()  # nothing from Ray (started meanwhile, then shut down)
    prefix = f"layerswap: error: widths [{width}, {width}]: a trial of 1 network(s) needs about "
    assert line.startswith(prefix), line
    assert f"GiB of memory but this machine's memory is {ram / 2**30:.2f} GiB; " in line
    assert not (tmp_path / "store").exists()


def test_gpu_budget_is_the_share_of_the_smallest_gpu_and_never_more_than_is_free():
    big = GpuMemory(0, "H100", free=70 * 2**30, total=80 * 2**30, compute_mode=0)
    small_busy = GpuMemory(1, "A10", free=5 * 2**30, total=24 * 2**30, compute_mode=0)
    assert gpu_budget([big], 0.25).bytes == 20 * 2**30
    budget = gpu_budget([big, small_busy], 0.5)
    assert budget.bytes == 5 * 2**30 and "0.5 of A10" in budget.source and budget.process_bytes > 0
    exclusive = GpuMemory(0, "H100", free=80 * 2**30, total=80 * 2**30, compute_mode=3)
    assert compute_mode_warnings([big, exclusive], 0.25) == [
        "warning: GPU 0 (H100) is not in the default compute mode (mode 3): "
        "trials sharing it (0.25 GPU each) may fail to start"
    ]
    assert compute_mode_warnings([exclusive], 1.0) == []


def precision_seen_during(train, monkeypatch) -> dict[str, set[str]]:
    """The CUDA fp32 matmul precision setting while backward and the optimizer step run (the step
    observed by a wrapper that records the setting and then steps as ever)."""
    seen: dict[str, set[str]] = {"backward": set(), "step": set()}

    def unpack(tensor):
        seen["backward"].add(torch.backends.cuda.matmul.fp32_precision)
        return tensor

    real_step = Optimizer.step

    def recorded_step(optimizer: Optimizer) -> None:
        seen["step"].add(torch.backends.cuda.matmul.fp32_precision)
        real_step(optimizer)

    monkeypatch.setattr(Optimizer, "step", recorded_step)
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, unpack):
        train()
    return seen


@pytest.mark.parametrize("pack", [1, 2])
@pytest.mark.parametrize("precision", ["tf32", "fp32"])
def test_tf32_holds_in_backward_and_the_optimizer_step_and_is_restored(pack, precision, monkeypatch):
    data = load_dataset("synthetic").tensors(CPU)
    specs = [
        TrialSpec(dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(8,), seed=seed,
                  epochs=1, batch_size=256, optimizer=OptimizerSpec("sgd", 0.1), checkpoints=(0, 1),
                  precision=precision)
        for seed in range(pack)
    ]
    before = torch.backends.cuda.matmul.fp32_precision
    if pack == 1:
        seen = precision_seen_during(lambda: train_network(specs[0], data, CPU), monkeypatch)
    else:
        seen = precision_seen_during(lambda: train_pack(specs, data, CPU), monkeypatch)
    expected = "tf32" if precision == "tf32" else "ieee"
    assert seen == {"backward": {expected}, "step": {expected}}
    assert torch.backends.cuda.matmul.fp32_precision == before  # evaluation afterwards: as it was


def test_trial_rows_name_cuda_and_cublas_only_on_a_gpu_and_trials_are_deterministic():
    assert cuda_columns(CPU) == {"cuda_version": None, "cublas_version": None}
    code = (
        "import os, sys, torch\n"
        "from trainables.train.device import make_deterministic\n"
        "make_deterministic()\n"
        "print(os.environ['CUBLAS_WORKSPACE_CONFIG'], torch.are_deterministic_algorithms_enabled(),"
        " torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor' in sys.modules)\n"
        "import torch._inductor.config\n"
        "print(torch._inductor.config.deterministic)\n"
    )
    env = {key: value for key, value in os.environ.items()
           if key not in ("CUBLAS_WORKSPACE_CONFIG", "TORCHINDUCTOR_DETERMINISTIC")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=env)
    # deterministic, without importing Inductor (3 s of a worker's start), and Inductor too once imported
    assert result.stdout.split() == [":4096:8", "True", "True", "False", "True"], result.stderr
