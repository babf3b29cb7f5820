"""Bad sweep input is refused before anything runs: one line, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from tests.helpers import tiny_raw_config

BAD_VALUES = [
    # (field override, text the error line must contain)
    ({"widths": []}, "widths: []"),
    ({"widths": [[16, 0]]}, "widths: [16, 0]"),
    ({"widths": [[16, -3]]}, "widths: [16, -3]"),
    ({"seeds": 0}, "seeds: 0"),
    ({"seeds": [1, 1]}, "seeds: [1, 1]"),
    ({"seeds": "three"}, "seeds: 'three'"),
    ({"epochs": 0}, "epochs: 0"),
    ({"checkpoints": [0, 7]}, "checkpoints: 7"),
    ({"checkpoints": [-1]}, "checkpoints: -1"),
    ({"dataset": "imagenet"}, "dataset: 'imagenet'"),
    ({"model": "resnet"}, "model: 'resnet'"),
    ({"optimizer": {"name": "lbfgs", "lr": 0.1}}, "name: 'lbfgs'"),
    ({"optimizer": {"name": "sgd", "lr": 0}}, "optimizer.lr: 0"),
    ({"optimizer": {"name": "sgd", "lr": -0.5}}, "optimizer.lr: -0.5"),
    ({"swaps": ["reinit", "shuffle"]}, "swaps: 'shuffle'"),
    ({"batch_size": 0}, "batch_size: 0"),
    ({"resources": {"cpu_per_trial": 0}}, "resources.cpu_per_trial: 0"),
    ({"epoch": 3}, "epoch: 3"),
]


def run_cli(tmp_path: Path, config_text: str, *extra: str, capsys) -> tuple[int, str]:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    code = main(["sweep", str(config), *extra])
    return code, capsys.readouterr().err


def assert_one_clear_line(err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("layerswap: error: ") and expected in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("override", "expected"), BAD_VALUES)
def test_bad_value_is_refused_with_one_line_and_nothing_written(tmp_path, capsys, override, expected):
    store = tmp_path / "store"
    code, err = run_cli(tmp_path, yaml.safe_dump(tiny_raw_config(store, **override)), capsys=capsys)
    assert code == 2
    assert_one_clear_line(err, expected)
    assert not store.exists()


def test_yaml_that_does_not_parse(tmp_path, capsys):
    code, err = run_cli(tmp_path, "name: x\nwidths: [[16, 8]\n", capsys=capsys)
    assert code == 2
    assert_one_clear_line(err, "is not valid YAML at line")


def test_store_uri_pyarrow_cannot_open(tmp_path, capsys):
    text = yaml.safe_dump(tiny_raw_config(tmp_path / "store"))
    code, err = run_cli(tmp_path, text, "--store", "nosuchfs://bucket/prefix", capsys=capsys)
    assert code == 2
    assert_one_clear_line(err, "pyarrow cannot open 'nosuchfs://bucket/prefix'")


def test_store_that_is_a_file(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("precious")
    code, err = run_cli(tmp_path, yaml.safe_dump(tiny_raw_config(not_a_dir)), capsys=capsys)
    assert code == 2
    assert_one_clear_line(err, "is a file, not a store directory")
    assert not_a_dir.read_text() == "precious"


def test_seeds_override_is_validated(tmp_path, capsys):
    text = yaml.safe_dump(tiny_raw_config(tmp_path / "store"))
    code, err = run_cli(tmp_path, text, "--seeds", "0", capsys=capsys)
    assert code == 2
    assert_one_clear_line(err, "seeds: 0")


def test_gpu_share_on_a_machine_without_gpus_is_refused(tmp_path):
    """Starts its own Ray (in a subprocess) that sees no GPU, whatever the machine has."""
    raw = tiny_raw_config(tmp_path / "store", resources={"cpu_per_trial": 1, "gpu_per_trial": 0.5})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config), "--no-report"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2
    # Ray's own start-up lines come first; ours is one line, the last.
    error_lines = [line for line in result.stderr.splitlines() if "layerswap: error" in line]
    assert error_lines == result.stderr.strip().splitlines()[-1:]
    assert "resources.gpu_per_trial: 0.5 is more than this Ray has (0 GPU)" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()
