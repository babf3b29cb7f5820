"""cluster.yaml and cluster-onprem.yaml pass the cluster launcher's own checks (Ray's schema)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def launcher_config(name: str) -> dict:
    """What `ray up` validates: the file merged with the provider's defaults, then schema-checked."""
    config = prepare_config(load(name))
    validate_config(config)
    return config


def pinned(package: str) -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [version] = [
        m.group(1) for d in dependencies if (m := re.fullmatch(rf"{package}(?:\[[^\]]*\])?==(\S+)", d))
    ]
    return version


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_pass_rays_validation(name):
    launcher_config(name)


def test_the_validation_catches_a_broken_node_type():
    raw = load("cluster.yaml")
    head = raw["available_node_types"]["head"]
    head["resource"] = head.pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        validate_config(prepare_config(raw))


def test_aws_head_takes_no_trial_and_gpu_workers_autoscale():
    config = launcher_config("cluster.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    [gpu_worker] = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu_worker["resources"]["GPU"] >= 1
    assert gpu_worker["node_config"]["InstanceType"].startswith("g5.")
    assert gpu_worker["min_workers"] < gpu_worker["max_workers"] <= config["max_workers"]
    assert any("ray start --head" in command for command in config["head_start_ray_commands"])
    assert any("ray start --address" in command for command in config["worker_start_ray_commands"])


def test_images_pin_the_ray_of_pyproject():
    docker = launcher_config("cluster.yaml")["docker"]
    ray_version = pinned("ray")
    assert ray_version == ray.__version__
    assert docker["head_image"] == f"rayproject/ray:{ray_version}-py311-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{ray_version}-py311-gpu"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.11")


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_every_node_gets_the_working_copy_and_installs_it(name):
    config = launcher_config(name)
    [remote] = [remote for remote, local in config["file_mounts"].items() if local == "."]
    # prepare_config merges setup_commands into the head's and the workers' lists
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any(f"pip install --quiet torch=={pinned('torch')}" in c for c in commands)
        assert any(f"pip install --quiet -e {remote}" in c for c in commands)


def test_onprem_variant_lists_the_machines_and_keeps_trials_off_the_head():
    config = launcher_config("cluster-onprem.yaml")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    assert any("--num-cpus=0" in command for command in config["head_start_ray_commands"])
