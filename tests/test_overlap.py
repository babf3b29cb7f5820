"""Time to the first result: Ray starts while the sweep plans, a refusal meanwhile leaves no Ray,
and the last line of sweep and analyze says where the time went."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.run.budget import machine_memory_bytes
from tests.helpers import ray_processes_of, tiny_raw_config

ROOT = Path(__file__).resolve().parent.parent
PHASES = re.compile(r"in (\d+\.\d) s: (.*)$")


def cli(*argv: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float, int]:
    """(result, wall seconds, pid) of ``layerswap`` in a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = process.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), wall, process.pid


def phases_of(line: str) -> tuple[float, dict[str, float]]:
    match = PHASES.search(line)
    assert match, line
    parts = [part.rsplit(" ", 1) for part in match[2].split(", ")]
    return float(match[1]), {name: float(value) for name, value in parts}


def test_the_sweep_module_imports_neither_torch_nor_ray_tune():
    """Ray's start waits for nothing heavy: torch and Tune are imported while it starts."""
    code = ("import sys, orchestrator.run.sweep\n"
            "print(sorted(m for m in ('torch', 'ray.tune') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


PLAN_AN_MLP_SWEEP = """
import sys
from orchestrator.catalog.naming import configuration_labels
from orchestrator.config.sweep_config import load_config
from orchestrator.run.packing import make_packs
from orchestrator.run.sweep import check_before_ray
from orchestrator.run.sweep_plan import open_sweep, plan_sweep
import orchestrator.run.tune_sweep  # the trials' configs and Tune's entry point

plan = plan_sweep(open_sweep(load_config(sys.argv[1])))
budget = check_before_ray(plan, None, print)
packs = make_packs(plan.config, plan.todo, plan.datasets, 2, budget, print, configuration_labels(plan.specs))
print(len(plan.todo), len(packs), "torch" in sys.modules)
"""


@pytest.mark.parametrize(("model", "dataset", "widths", "torch_imported"), [
    ("mlp", "synthetic", [[16, 8], [12]], False), ("cnn", "synthetic-images", [[4, 8]], True),
])
def test_a_sweep_of_mlps_plans_without_torch(tmp_path, model, dataset, widths, torch_imported):
    """The driver of an MLP sweep sizes and packs its networks without torch (seconds of imports
    before its first trial); a family sized on the meta device imports it, as it must."""
    config = tmp_path / "sweep.yaml"
    raw = tiny_raw_config(tmp_path / "store", model=model, dataset=dataset, widths=widths)
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-c", PLAN_AN_MLP_SWEEP, str(config)], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    todo, packs, imported = result.stdout.split()[-3:]
    assert int(todo) == 2 * len(widths) and int(packs) >= 1
    assert imported == str(torch_imported)


def test_a_sweep_refused_while_ray_starts_leaves_no_ray_and_one_line(tmp_path):
    width = math.ceil(math.sqrt(2 * machine_memory_bytes() / 4 / 5))  # twice this machine's memory
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "store", widths=[[width, width]], seeds=1)))
    result, _, pid = cli("sweep", str(config))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"layerswap: error: widths [{width}, {width}]: a trial of 1 network(s) needs ")
    assert not (tmp_path / "store").exists()
    assert ray_processes_of(pid) == []


def test_the_last_lines_of_sweep_and_analyze_say_where_their_time_went(tmp_path):
    store = tmp_path / "store"
    config = tmp_path / "config.yaml"
    raw = tiny_raw_config(store, widths=[[8]], seeds=1, epochs=1, checkpoints=[0, 1])
    config.write_text(yaml.safe_dump(raw))
    result, wall, pid = cli("sweep", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-3].startswith("store: ") and lines[-2].startswith("report: ")
    assert lines[-1].startswith("sweep tiny: 1 trained, 0 skipped (already trained), 0 failed; ")
    total, phases = phases_of(lines[-1])
    # this network trains and measures in well under 0.1 s once warm: "training" and "measuring" may
    # round away (phases under 0.05 s are left out; tests/test_phases.py checks how they are counted)
    assert {"plan", "workers", "report"} <= set(phases), lines[-1]
    assert set(phases) <= {"plan", "ray", "workers", "training", "measuring", "writing", "report", "the rest"}
    assert sum(phases.values()) == pytest.approx(total, abs=0.05 * len(phases) + 0.01)
    assert 0.5 * wall < total <= wall  # from the process's start to its last line; Ray already stopped
    assert ray_processes_of(pid) == []
    assert "autoscaler" not in result.stdout + result.stderr  # no monitor started (UNUSED_SERVICES)

    result, wall, _ = cli("analyze", str(store), "--swaps", "rerandomize", "--draws", "2")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("analyze: 1 networks measured (2 new rows), 0 failed, in "), last
    total, phases = phases_of(last)
    assert {"plan", "ray", "workers", "measuring"} <= set(phases), last
    assert sum(phases.values()) == pytest.approx(total, abs=0.05 * len(phases) + 0.01)


UNUSED_SERVICES_PROBE = """
import os
import ray
import ray._private.node as ray_node
from orchestrator.run.connect import UNUSED_SERVICES, start_local_ray
from tests.helpers import ray_processes_of

originals = [getattr(ray_node.Node, name) for name in UNUSED_SERVICES]
start_local_ray()
print(ray.get(ray.remote(lambda: 6 * 7).remote()))
print("restored" if [getattr(ray_node.Node, name) for name in UNUSED_SERVICES] == originals else "patched")
print(*ray_processes_of(os.getpid()), sep="\\n")
"""


def test_a_ray_started_for_a_command_runs_no_dashboard_autoscaler_or_log_monitor():
    """Ray, started here, runs tasks without its API server (the dashboard process), its autoscaler
    monitor and its log monitor; a later ``ray.init`` in the same process would start them again."""
    result = subprocess.run([sys.executable, "-c", UNUSED_SERVICES_PROBE], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer, restored, *processes = result.stdout.strip().splitlines()
    assert (answer, restored) == ("42", "restored")
    assert any("/raylet " in line for line in processes) and any("/gcs_server " in line for line in processes)
    for script in ("dashboard/dashboard.py", "autoscaler/_private/monitor.py", "_private/log_monitor.py"):
        assert not any(script in line for line in processes), (script, processes)


PRESTARTED_WORKER_PROBE = """
import os, sys, time
from pathlib import Path
import ray
from ray import tune
from orchestrator.run.tune_sweep import trials_in_prestarted_workers

def idle_workers(session):
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if ((proc / "cmdline").read_bytes().startswith(b"ray::IDLE")
                    and session in (Path("/proc") / parent / "cmdline").read_text()):
                found.add(int(proc.name))
        except (OSError, IndexError):
            continue
    return found

ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
session = ray._private.worker._global_node.get_session_dir_path()
deadline = time.monotonic() + 60
while not (idle := idle_workers(session)):
    assert time.monotonic() < deadline, "Ray prestarted no worker in 60 s"
    time.sleep(0.1)
trials_in_prestarted_workers()

def trial(config):
    tune.report({"pid": os.getpid()})

result = tune.Tuner(tune.with_resources(trial, {"cpu": 1}),
                    run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0)).fit()[0]
print("prestarted" if result.metrics["pid"] in idle else "fresh")
"""


def test_a_trial_starts_in_a_worker_ray_prestarted(tmp_path):
    """A Tune trial runs in one of the workers Ray prestarted (two, one per CPU: one is often taken
    before the trial asks, so with one CPU the trial sometimes found none left). Without
    :func:`trials_in_prestarted_workers`, with the runtime_env Tune gives trial actors, Ray 2.60 started
    a fresh process for the trial (checked by hand; not run here, to keep the suite short)."""
    result = subprocess.run([sys.executable, "-c", PRESTARTED_WORKER_PROBE, str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "prestarted"
