"""``layerswap preflight``: is this Ray cluster ready to run a sweep into this store?

One Ray task per alive node (pinned to it, asking for no CPU, so it also runs
on a head that advertises none) reports the node's Python, Ray and torch
versions and how many CUDA devices torch sees there; on a node with GPUs a
second task asks for a GPU, as a trial does, and runs a real CUDA matmul there
(device name, driver, torch and CUDA versions). The first task probes the store from
that node: it reads a token file the driver wrote (so the node sees the
driver's store, not a disk of its own), writes a file of its own under
``_preflight/``, reads it back and deletes it. The findings are judged against
the driver's versions and, given a sweep config, against the CPUs and GPUs a
trial asks for. The probes themselves are :mod:`trainables.worker.probes`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import pyarrow.fs as pafs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config.blocks import Resources
from orchestrator.text_table import text_table
from trainables.store import Store, StoreError
from trainables.store.uri import redact_secrets
from trainables.worker.probes import PROBE_DIR, Versions, cuda_check, probe_node


@dataclass(frozen=True)
class NodeReport:
    """What one node said. ``store`` is "ok", "-" (no store probed) or what failed."""

    node_id: str
    address: str
    cpus: float
    gpus: float
    """GPUs Ray schedules on this node."""
    versions: Versions | None
    """None when the node's task did not answer; ``error`` says why."""
    cuda_devices: int
    store: str
    error: str | None = None
    cuda_check: str = "-"
    """What the GPU task said: "ok: <device, versions, matmul error>", "FAIL: ..." or "-" (no GPU)."""


@dataclass(frozen=True)
class Preflight:
    driver: Versions
    store_uri: str | None
    """The store probed, credentials redacted."""
    resources: Resources | None
    nodes: list[NodeReport]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_preflight(
    store_uri: str | None = None, resources: Resources | None = None, timeout_s: float = 120.0
) -> Preflight:
    """Probe every alive node of the connected Ray cluster; see the module docstring."""
    driver = Versions.here()
    driver_problems: list[str] = []
    token_relpath, token = None, uuid.uuid4().bytes
    store = Store.open(store_uri) if store_uri else None
    if store is not None:
        token_relpath = f"{PROBE_DIR}/driver-{uuid.uuid4().hex}"
        try:
            store.write_bytes(token_relpath, token)
        except OSError as err:
            driver_problems.append(
                f"this machine (the driver) cannot write the store {store.uri}: {redact_secrets(str(err))}"
            )
            token_relpath = None
    try:
        nodes = _probe_nodes(store.location if store else None, token_relpath, token, timeout_s)
    finally:
        if store is not None and token_relpath is not None:
            _remove_probe_files(store, token_relpath)
    problems, warnings = assess(driver, nodes, resources)
    shown = store.uri if store else None
    return Preflight(driver, shown, resources, nodes, driver_problems + problems, warnings)


def _probe_nodes(
    store_uri: str | None, token_relpath: str | None, token: bytes, timeout_s: float
) -> list[NodeReport]:
    alive = sorted(
        (node for node in ray.nodes() if node["Alive"]),
        key=lambda node: (node["NodeManagerAddress"], node["NodeID"]),
    )
    remote = ray.remote(probe_node)
    refs = [
        remote.options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            max_retries=0,
        ).remote(store_uri, token_relpath, token)
        for node in alive
    ]
    gpu_task = ray.remote(cuda_check)
    cuda_refs = {
        node["NodeID"]: gpu_task.options(
            num_cpus=0,
            num_gpus=min(1.0, float(node["Resources"]["GPU"])),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            max_retries=0,
        ).remote()
        for node in alive
        if node["Resources"].get("GPU", 0) > 0
    }
    waiting = refs + list(cuda_refs.values())
    ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=timeout_s)
    reports = []
    for node, ref in zip(alive, refs, strict=True):
        answer, error = None, f"no answer in {timeout_s:.0f} s"
        if ref in ready:
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as err:
                error = f"the probe task failed: {str(err).strip().splitlines()[-1]}"
        reports.append(
            NodeReport(
                node_id=node["NodeID"],
                address=node["NodeManagerAddress"],
                cpus=float(node["Resources"].get("CPU", 0.0)),
                gpus=float(node["Resources"].get("GPU", 0.0)),
                versions=answer["versions"] if answer else None,
                cuda_devices=answer["cuda_devices"] if answer else 0,
                store=answer["store"] if answer else "?",
                error=None if answer else error,
                cuda_check=_answer(cuda_refs.get(node["NodeID"]), ready, timeout_s),
            )
        )
    return reports


def _answer(ref, ready: list, timeout_s: float) -> str:
    """The GPU task's answer, or why there is none."""
    if ref is None:
        return "-"
    if ref not in ready:
        return f"FAIL: no answer in {timeout_s:.0f} s (every GPU busy, or the task cannot start)"
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        return f"FAIL: the GPU task failed: {str(err).strip().splitlines()[-1]}"


def _remove_probe_files(store: Store, token_relpath: str) -> None:
    """Delete the driver's token, then the probe directory if nothing else is in it."""
    try:
        store.fs.delete_file(store.path(token_relpath))
        directory = store.path(PROBE_DIR)
        if not store.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True)):
            store.fs.delete_dir(directory)
    except (OSError, StoreError):
        pass  # leftovers start with "_": store readers never see them


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def trials_that_fit(node: NodeReport, resources: Resources) -> int:
    """How many trials asking ``resources`` the node can run at once."""
    fits = math.floor(node.cpus / resources.cpu_per_trial + 1e-9)
    if resources.gpu_per_trial > 0:
        fits = min(fits, math.floor(node.gpus / resources.gpu_per_trial + 1e-9))
    return fits


def assess(
    driver: Versions, nodes: list[NodeReport], resources: Resources | None
) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the nodes' answers; a problem fails the preflight."""
    problems: list[str] = []
    warnings: list[str] = []
    answered = [node for node in nodes if node.versions is not None]
    for node in nodes:
        name = node_name(node)
        if node.versions is None:
            problems.append(f"{name}: {node.error}")
            continue
        if node.store.startswith("FAIL"):
            problems.append(f"{name}: store: {node.store.removeprefix('FAIL: ')}")
        if node.versions.ray != driver.ray:
            problems.append(f"{name}: ray {node.versions.ray}, the driver has {driver.ray}")
        if _minor(node.versions.python) != _minor(driver.python):
            problems.append(f"{name}: python {node.versions.python}, the driver has {driver.python}")
        elif node.versions.python != driver.python:
            warnings.append(f"{name}: python {node.versions.python}, the driver has {driver.python}")
        if node.cuda_devices > 0 and node.cuda_check.startswith("FAIL"):
            problems.append(f"{name}: CUDA check: {node.cuda_check.removeprefix('FAIL: ')}")
        if node.gpus > node.cuda_devices:
            problems.append(
                f"{name}: Ray schedules {node.gpus:g} GPU(s) here but torch sees {node.cuda_devices} "
                "CUDA device(s): trials asking for a GPU would run on the CPU or fail "
                "(a CPU-only torch, a missing NVIDIA driver, or --num-gpus larger than the machine)"
            )
        elif node.cuda_devices > node.gpus:
            warnings.append(
                f"{name}: torch sees {node.cuda_devices} CUDA device(s) but Ray schedules "
                f"{node.gpus:g} GPU(s) here; start Ray on it with --num-gpus={node.cuda_devices}"
            )
    torches = sorted({_public(node.versions.torch) for node in answered})
    if len(torches) > 1:
        problems.append(f"nodes run different torch versions ({', '.join(torches)}): results would mix them")
    if resources is not None and answered:
        capacity = sum(trials_that_fit(node, resources) for node in answered)
        if capacity == 0:
            warnings.append(
                f"no alive node can run a trial now (a trial asks for {resources.cpu_per_trial:g} CPU and "
                f"{resources.gpu_per_trial:g} GPU); trials wait until nodes with them join "
                "(an autoscaling cluster starts them when the sweep asks)"
            )
    return problems, warnings


def node_name(node: NodeReport) -> str:
    host = node.versions.hostname if node.versions else node.address
    return f"{host} ({node.node_id[:8]})"


def format_preflight(result: Preflight) -> str:
    """The report: one row per node, then the problems and warnings, then a verdict line."""
    header = ["node", "address", "python", "ray", "torch", "cpus", "gpus", "cuda"]
    if result.resources is not None:
        header.append("trials")
    header.append("store")
    rows = []
    for node in result.nodes:
        versions = node.versions
        row = [
            node_name(node),
            node.address,
            versions.python if versions else "?",
            versions.ray if versions else "?",
            versions.torch if versions else "?",
            f"{node.cpus:g}",
            f"{node.gpus:g}",
            str(node.cuda_devices) if versions else "?",
        ]
        if result.resources is not None:
            row.append(str(trials_that_fit(node, result.resources)))
        row.append(node.store)
        rows.append(row)
    driver = result.driver
    lines = [
        f"driver: {driver.hostname}, python {driver.python}, ray {driver.ray}, torch {driver.torch}",
        f"store: {result.store_uri or '(none given: not probed)'}",
    ]
    if result.resources is not None:
        lines.append(
            f"a trial asks for {result.resources.cpu_per_trial:g} CPU and "
            f"{result.resources.gpu_per_trial:g} GPU; 'trials' is how many fit on each node at once"
        )
    lines += ["", text_table(header, rows), ""]
    lines += [f"cuda {node_name(node)}: {node.cuda_check}" for node in result.nodes if node.cuda_check != "-"]
    lines += [f"problem: {problem}" for problem in result.problems]
    lines += [f"warning: {warning}" for warning in result.warnings]
    if result.problems:
        lines.append(f"preflight failed: {len(result.problems)} problem(s)")
    else:
        lines.append(f"ok: {len(result.nodes)} node(s) ready")
    return "\n".join(lines)
