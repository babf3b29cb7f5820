"""`layerswap preflight` on a real local Ray: one probe task per node, the store probed from each."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import ray
import torch
import yaml

from orchestrator.cli import main
from orchestrator.config.blocks import Resources
from orchestrator.run.preflight import assess, run_preflight
from tests.helpers import tiny_raw_config
from trainables.worker.probes import Versions


def test_every_node_reports_its_versions_gpus_and_a_store_probe(local_ray, tmp_path):
    result = run_preflight(str(tmp_path / "store"), Resources(cpu_per_trial=0.5, gpu_per_trial=0.25))
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert {node.node_id for node in result.nodes} == alive
    [node] = result.nodes
    assert node.versions is not None and node.error is None
    assert (node.versions.python, node.versions.ray) == (platform.python_version(), ray.__version__)
    assert (node.cpus, node.gpus, node.cuda_devices) == (2, 1, torch.cuda.device_count())
    assert node.store == "ok"
    # the GPU task asked for the declared GPU and ran; without CUDA it says so instead of a matmul
    if torch.cuda.is_available():
        assert node.cuda_check.startswith("ok: ") and "matmul relative error" in node.cuda_check
    else:
        assert node.cuda_check.startswith("FAIL: torch.cuda.is_available() is False (torch ")
    # the probe files are gone: nothing but the (now empty) store root is left
    assert list((tmp_path / "store").rglob("*")) == []
    # conftest's Ray declares one GPU; without a real one, preflight must say so
    gpu_problems = [p for p in result.problems if "torch sees 0 CUDA device(s)" in p]
    assert len(gpu_problems) == (1 if torch.cuda.device_count() == 0 else 0)
    assert result.problems == gpu_problems and result.warnings == []


def test_a_store_no_node_can_write_fails_the_probe(local_ray, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_preflight(str(blocker / "store"))
    [node] = result.nodes
    assert node.store.startswith("FAIL: write: ")
    assert any("the driver" in p and "cannot write the store" in p for p in result.problems)
    assert any(p.startswith(f"{node.versions.hostname} (") and "store: write" in p for p in result.problems)


def test_assess_compares_nodes_with_the_driver_and_the_config(local_ray, tmp_path):
    [node] = run_preflight(None).nodes
    assert node.store == "-"
    driver = Versions.here()
    healthy = replace(node, cpus=4.0, gpus=1.0, cuda_devices=1, cuda_check="ok: H100, driver 550.54")
    assert assess(driver, [healthy], Resources(1, 0.25)) == ([], [])
    broken = replace(healthy, cuda_check="FAIL: the matmul is wrong: H100, ...")
    [problem] = assess(driver, [broken], Resources(1, 0.25))[0]
    assert problem.endswith(": CUDA check: the matmul is wrong: H100, ...")

    older_ray = replace(healthy, versions=replace(driver, ray="2.9.0", torch="2.0.0"))
    cpu_only = replace(healthy, cuda_devices=0)
    problems, warnings = assess(driver, [older_ray, cpu_only], Resources(1, 0.25))
    assert any("ray 2.9.0, the driver has" in p for p in problems)
    assert any("different torch versions" in p for p in problems)
    assert any("Ray schedules 1 GPU(s) here but torch sees 0" in p for p in problems)
    assert warnings == []

    no_gpu = replace(healthy, gpus=0.0, cuda_devices=0)
    problems, warnings = assess(driver, [no_gpu], Resources(1, 0.25))
    assert problems == [] and len(warnings) == 1 and "no alive node can run a trial" in warnings[0]


def test_cli_prints_one_table_and_exits_nonzero_on_problems(local_ray, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    resources = {"cpu_per_trial": 0.5, "gpu_per_trial": 0.25}
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store", resources=resources)))
    code = main(["preflight", "--config", str(config)])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("node "))
    columns = ["node", "address", "python", "ray", "torch", "cpus", "gpus", "cuda", "trials", "store"]
    assert header.split() == columns
    assert f"store: {tmp_path / 'store'}" in out and "a trial asks for 0.5 CPU and 0.25 GPU" in out
    assert code == (1 if torch.cuda.device_count() == 0 else 0)
    assert ("preflight failed" in out) == (code == 1)
    [cuda_line] = [line for line in out.splitlines() if line.startswith("cuda ")]
    assert cuda_line.split(": ", 1)[1].startswith("ok: " if torch.cuda.is_available() else "FAIL: ")
    assert not Path(tmp_path / "store" / "_preflight").exists()
