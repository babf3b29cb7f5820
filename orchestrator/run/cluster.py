"""What the connected Ray cluster offers a sweep: a store every node reaches, resources that fit,
and how many trials run at once."""

from __future__ import annotations

import ray

from orchestrator.config.blocks import Resources
from orchestrator.config.values import ConfigError
from trainables.store import Store, StoreError


def check_store_reachable(store: Store, shared_fs: bool) -> None:
    """Refuse a local store path on a cluster of several nodes unless every node mounts it."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) > 1 and store.is_local and not shared_fs:
        raise StoreError(
            f"store: {store.uri!r} is a local path but the Ray cluster has {len(nodes)} nodes; "
            "trials on other nodes would write to their own disks. Use an s3:// (or other "
            "shared) URI, or pass --shared-fs if every node mounts this path"
        )


def trial_slots(resources: Resources) -> int:
    """How many trials the connected Ray can run at once now (at least 1)."""
    available = ray.cluster_resources()
    if resources.gpu_per_trial > 0:
        return max(1, int(available.get("GPU", 0) // resources.gpu_per_trial))
    return max(1, int(available.get("CPU", 0) // resources.cpu_per_trial))


def check_resources_fit(resources: Resources) -> None:
    """On a fixed (non-autoscaling) Ray, refuse a trial that could never be scheduled."""
    available = ray.cluster_resources()
    for field, key, asked in (
        ("resources.cpu_per_trial", "CPU", resources.cpu_per_trial),
        ("resources.gpu_per_trial", "GPU", resources.gpu_per_trial),
    ):
        if asked > available.get(key, 0):
            raise ConfigError(
                f"{field}: {asked} is more than this Ray has ({available.get(key, 0):g} {key}); "
                f"lower it{' or set it to 0 to train on the CPU' if key == 'GPU' else ''}"
            )
