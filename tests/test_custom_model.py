"""``model: custom``: a factory from tests/factories/ through a real sweep, its code reaching the Ray
workers through ``runtime_env``, its source recorded; a factory that cannot be used is one line
before Ray starts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from orchestrator.cli import main
from tests.helpers import tiny_raw_config
from trainables.store.schemas import SWAPS_SCHEMA, TRIALS_SCHEMA, WEIGHTS_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
FACTORIES = Path(__file__).resolve().parent / "factories"
"""On no worker's path: a worker imports ``layernorm_net`` only if the sweep ships it."""


def custom_config(store: Path, factory: str, **overrides) -> dict:
    return tiny_raw_config(store, **{
        "dataset": "synthetic-images", "model": "custom", "factory": factory, "widths": [[6]], "seeds": 2,
        "epochs": 2,
        "checkpoints": [0, 2], "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "resources": {"cpu_per_trial": 1, "gpu_per_trial": 0}, **overrides,
    })


@pytest.mark.parametrize(("factory", "message"), [
    ("no_such_module:build",
     "factory: cannot import 'no_such_module' (ModuleNotFoundError: No module named 'no_such_module'); the "
     "module must be importable from the directory the sweep is started in or from PYTHONPATH"),
    ("layernorm_net:missing", "factory: 'layernorm_net:missing': module 'layernorm_net' has no 'missing'"),
    ("layernorm_net:not_a_module", "factory: layernorm_net:not_a_module returned a dict, not an nn.Module"),
    ("layernorm_net:tied",
     "factory: layernorm_net:tied has layer names that collide: '4' is '2' registered again (tied weights); "
     "a layer must own its tensors under one name"),
    ("layernorm_net:wrong_logits",
     "factory: layernorm_net:wrong_logits's network maps a batch of shape (2, 3, 8, 8) to (2, 5), expected "
     "logits of shape (2, 4) for synthetic-images"),
    ("layernorm_net",
     "factory: 'layernorm_net' is not allowed; model custom needs factory: 'package.module:callable'"),
    ("layernorm_net:build pack=2",
     "pack: 2 is not allowed for model custom; a custom model trains one network per trial "
     "(pack: 1 or auto)"),
])
def test_a_factory_that_cannot_be_used_is_one_line_before_anything_starts(
    tmp_path, monkeypatch, capsys, factory, message
):
    monkeypatch.chdir(FACTORIES)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the sweep puts the working directory on it
    config = tmp_path / "custom.yaml"
    factory, _, pack = factory.partition(" pack=")
    config.write_text(yaml.safe_dump(custom_config(tmp_path / "store", factory, pack=int(pack or 1))))
    assert main(["sweep", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"layerswap: error: {message}"]
    assert not (tmp_path / "store").exists()  # refused before the store was opened, Ray started


def test_a_custom_model_sweeps_with_its_code_shipped_to_the_workers(tmp_path):
    store = tmp_path / "store"
    config = tmp_path / "custom.yaml"
    raw = custom_config(store, "layernorm_net:build", widths=[[5]], factory_kwargs={"hidden": 12},
                        swaps=["reinit", "rerandomize", "transplant", "interpolate"], alphas=[0, 1])
    config.write_text(yaml.safe_dump(raw))
    # The driver imports the factory from a folder on its own sys.path only: Ray gives workers the
    # driver's working directory and PYTHONPATH, so here they can import it only through py_modules.
    driver = (f"import sys; sys.path.insert(0, {str(FACTORIES)!r}); from orchestrator.cli import main; "
              f"sys.exit(main(['sweep', {str(config)!r}, '--no-report']))")
    result = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 trained, 0 skipped (already trained), 0 failed" in result.stdout

    trials = ds.dataset(store / "index" / "trials", schema=TRIALS_SCHEMA, format="parquet").to_table()
    source = hashlib.sha256((FACTORIES / "layernorm_net.py").read_bytes()).hexdigest()
    assert trials["factory_source"].to_pylist() == [f"layernorm_net.py sha256:{source}"] * 2
    conv, fc1, norm, head = 3 * 5 * 9 + 5, 5 * 4 * 12 + 12, 2 * 12, 12 * 4 + 4  # widths [5] reach the factory
    assert trials["n_params"].to_pylist() == [conv + fc1 + norm + head] * 2
    spec = json.loads(trials["spec_json"][0].as_py())
    assert (spec["model"], spec["factory"], spec["factory_kwargs"]) == ("custom", "layernorm_net:build",
                                                                         {"hidden": 12})
    assert min(trials["test_acc"].to_pylist()) > 0.5  # 4 classes: chance is 0.25

    swaps = ds.dataset(store / "index" / "swaps", schema=SWAPS_SCHEMA, format="parquet").to_table()
    layers = {row["layer"] for row in swaps.to_pylist() if row["layer"] is not None}
    assert layers == {"conv", "fc1", "head"}  # the LayerNorm is part of fc1
    kinds = {row["kind"] for row in swaps.to_pylist()}
    assert kinds == {"none", "reinit", "rerandomize", "transplant", "interpolate"}
    weights = ds.dataset(store / "index" / "weights", schema=WEIGHTS_SCHEMA, format="parquet").to_table()
    owner = {row["tensor"]: row["layer"] for row in weights.to_pylist()}
    assert owner["norm.weight"] == owner["norm.bias"] == "fc1"
