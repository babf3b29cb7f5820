"""The sweep config's round trip and grid, derived from the dataclass fields."""

from __future__ import annotations

import dataclasses

from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import SweepConfig, load_config, parse_config
from orchestrator.run.sweep_plan import sweep_record
from trainables.spec import TrialSpec, training_fields

# Golden record names: a sweep record is named by the hash of the config's raw form, so a change
# here would give every existing sweep a second record. Do not update them; fix to_raw instead.
GOLDEN_RECORDS = {
    "configs/demo.yaml": "sweeps/demo/d057e81a9bef8e51.json",
    "configs/seed.yaml": "sweeps/seed-replication/e17c25ddf37cc0ed.json",
}


def test_the_records_of_existing_configs_keep_their_names() -> None:
    for path, relpath in GOLDEN_RECORDS.items():
        config = load_config(path)
        assert sweep_record(config, expand_grid(config), config.store)[0] == relpath


def test_every_training_field_is_a_config_field_and_reaches_every_spec(tmp_path) -> None:
    config = parse_config({
        "name": "t", "dataset": "synthetic", "model": "mlp", "widths": [[8], [4, 4]], "seeds": [3, 5],
        "epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
        "checkpoints": [1], "swaps": ["reinit"], "precision": "bf16", "store": str(tmp_path),
    })
    names = {field.name for field in dataclasses.fields(SweepConfig)}
    assert set(training_fields()) <= names
    specs = expand_grid(config)
    assert [(spec.widths, spec.seed) for spec in specs] == [((8,), 3), ((8,), 5), ((4, 4), 3), ((4, 4), 5)]
    for spec in specs:
        for name in training_fields():
            assert getattr(spec, name) == getattr(config, name)
    assert {spec.config_id for spec in specs[:2]} != {spec.config_id for spec in specs[2:]}
    assert isinstance(specs[0], TrialSpec) and specs[0].precision == "bf16"


def test_to_raw_round_trips_every_field_off_its_default(tmp_path) -> None:
    raw = {
        "name": "t", "dataset": "synthetic", "model": "mlp", "widths": [[8]], "seeds": 2, "epochs": 3,
        "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.01},
        "checkpoints": [0, 2], "swaps": ["reinit", "interpolate"], "rerandomize_draws": 3,
        "resources": {"cpu_per_trial": 2, "gpu_per_trial": 0.5}, "store": str(tmp_path),
        "precision": "tf32", "max_concurrent_trials": 4, "wandb": {"project": "p", "mode": "offline"},
        "pack": 3, "checkpoint_seconds": 5, "alphas": [0, 0.5, 1],
        "criticality": {"alphas": 3, "sigmas": 4},
    }
    config = parse_config(raw)
    again = parse_config(config.to_raw())
    assert again == config
    assert config.to_raw()["checkpoint_seconds"] == 5.0 and config.to_raw()["pack"] == 3
    default = parse_config({**raw, "checkpoint_seconds": 60, "pack": "auto"})
    assert "checkpoint_seconds" not in default.to_raw() and default.to_raw()["pack"] == "auto"
