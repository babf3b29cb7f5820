"""The config's grid: axes over training-spec fields, a real grid sweep, and every refused grid."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.catalog.naming import configuration_labels
from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.grid_axes import grid_keys, measurement_settings
from orchestrator.config.sweep_config import RECORD_V2_KEYS, ConfigError, parse_config
from orchestrator.run.budget import cpu_budget, machine_memory_bytes, trial_need_bytes
from orchestrator.run.packing import check_buildable, make_packs, optimizer_slots, pack_shape
from orchestrator.run.sweep import run_sweep
from tests.helpers import GRID_SWEEP, lr_grid, tiny_raw_config
from trainables.data.datasets import load_dataset
from trainables.spec import OptimizerSpec, TrialSpec, training_fields
from trainables.store import Store
from trainables.train.pack_shape import PackShape


def test_grid_keys_are_the_spec_fields_and_their_blocks_fields():
    keys = grid_keys()
    assert set(training_fields()) <= set(keys)
    assert {f"optimizer.{field.name}" for field in dataclasses.fields(OptimizerSpec)} <= set(keys)
    assert not {"seed", "widths", "data_mean", "data_std"} & set(keys)
    assert measurement_settings() == {
        "swaps", "rerandomize_draws", "alphas", "criticality", "recalibrate", "groups",
    }
    assert "grid" not in RECORD_V2_KEYS  # configs without a grid keep their record names


def test_the_networks_are_the_product_of_the_axes_widths_and_seeds(tmp_path):
    raw = lr_grid(tmp_path, [0.1, 0.05], grid={"optimizer.lr": [0.1, 0.05], "precision": ["fp32", "bf16"]})
    config = parse_config(raw)
    specs = expand_grid(config)
    assert len(specs) == 2 * 2 * 2 * 2 and len({s.trial_id for s in specs}) == 16
    assert len({s.config_id for s in specs}) == 8
    assert [(s.optimizer.lr, s.precision) for s in specs[::4]] == [
        (0.1, "fp32"), (0.1, "bf16"), (0.05, "fp32"), (0.05, "bf16")
    ]  # the first axis varies slowest, then widths, then seeds
    assert config.optimizer.lr == 0.1 and config.precision == "fp32"  # the first combination
    assert parse_config(config.to_raw()) == config
    assert "lr" not in config.to_raw()["optimizer"] and "precision" not in config.to_raw()
    labels = configuration_labels(specs)
    assert labels[specs[0].config_id] == f"widths 16-8, lr 0.1, fp32 · {specs[0].config_id[:8]}"
    assert labels[specs[-1].config_id] == f"widths 12, lr 0.05, bf16 · {specs[-1].config_id[:8]}"
    assert len(expand_grid(config.with_overrides(seeds=3))) == 2 * 2 * 2 * 3
    # a grid of one value is the same networks as that value at the top level
    single = expand_grid(parse_config(lr_grid(tmp_path, [0.1])))
    assert single == expand_grid(parse_config(tiny_raw_config(tmp_path)))


def test_one_configuration_is_named_by_its_widths():
    spec = TrialSpec("synthetic", 0.0, 1.0, "mlp", (8, 4), 0, 1, 8, OptimizerSpec("sgd", 0.1), (0, 1))
    one = {spec.config_id: f"mlp, widths 8-4 · {spec.config_id[:8]}"}
    assert configuration_labels([spec, dataclasses.replace(spec, seed=1)]) == one
    adam = dataclasses.replace(spec, optimizer=OptimizerSpec("adam", 0.001), epochs=2, checkpoints=(0, 2))
    labels = configuration_labels([spec, adam])
    assert labels[adam.config_id] == f"adam, lr 0.001, epochs 2 · {adam.config_id[:8]}"
    assert list(labels) == [adam.config_id, spec.config_id]  # one order: adam before sgd


def test_a_grid_sweep_trains_every_configuration_apart_and_one_more_value_only_its_networks(
    local_ray, grid_sweep, tmp_path, capsys
):
    swept, first, logged = grid_sweep  # lr 0.1 and 0.05 (shared with tests/test_grid_report.py)
    store = tmp_path / "store"
    shutil.copytree(swept, store)  # this test sweeps into it
    lines = list(logged)
    assert (first.total, first.completed, first.failed) == (8, 8, 0)
    plan_lines = sorted(line for line in lines if " trial(s) of " in line)
    assert [line.split(" · ")[0] for line in plan_lines] == [
        "widths 12, lr 0.05", "widths 12, lr 0.1", "widths 16-8, lr 0.05", "widths 16-8, lr 0.1"
    ]
    assert any(re.search(r"\(widths 16-8, lr 0.1 · [0-9a-f]{8}\) test_acc", line) for line in lines), lines
    trials = Store.open(str(store)).read_index("trials").to_pylist()
    configs = {row["config_id"]: (row["lr"], tuple(row["widths"])) for row in trials}
    assert len(trials) == 8 and len(configs) == 4
    assert sorted(configs.values()) == [(0.05, (12,)), (0.05, (16, 8)), (0.1, (12,)), (0.1, (16, 8))]
    assert all(row["pack_size"] <= 2 for row in trials)  # a pack holds seeds of one configuration

    assert main(["report", str(store)]) == 0
    capsys.readouterr()
    stats = pq.read_table(store / "report" / "stats.parquet").to_pandas()
    assert set(stats["config_id"]) == set(configs)
    assert (stats.groupby("config_id")["n"].max() == 2).all()  # each configuration pools its 2 seeds

    lines.clear()
    again = run_sweep(parse_config(lr_grid(store, [0.1, 0.05, 0.02], **GRID_SWEEP)), log=lines.append)
    assert (again.total, again.skipped, again.completed, again.failed) == (12, 8, 4, 0)
    new = {row["trial_id"]: row["lr"] for row in Store.open(str(store)).read_index("trials").to_pylist()}
    assert sorted(lr for trial_id, lr in new.items() if trial_id not in {r["trial_id"] for r in trials}) == [
        0.02, 0.02, 0.02, 0.02
    ]
    assert sorted(line.split(" · ")[0] for line in lines if " trial(s) of " in line) == [
        "widths 12, lr 0.02", "widths 16-8, lr 0.02"
    ]


REFUSED = [
    # (config override, YAML text appended, text the one line must contain)
    ({"optimizer": {"name": "sgd"}, "grid": {"optimizer.lrr": [0.1, 0.2]}}, "",
     "grid: 'optimizer.lrr' is not a training-spec field; did you mean 'optimizer.lr'?"),
    ({"grid": {"swaps": [["reinit"], ["transplant"]]}}, "", "grid: 'swaps' is a measurement setting"),
    ({"grid": {"criticality.alphas": [3, 5]}}, "", "grid: 'criticality.alphas' is a measurement setting"),
    ({"grid": {"resources.cpu_per_trial": [1, 2]}}, "", "is a run setting, not a training field"),
    ({"grid": {"widths": [[8], [4]]}}, "", "grid: 'widths' is already an axis of every sweep"),
    ({"optimizer": {"name": "sgd"}}, "grid: {optimizer.lr: [0.1, 0.10]}\n",
     "grid.optimizer.lr: [0.1, 0.1] is not allowed; each value may appear once (0.1 and 0.1 are one value)"),
    ({"grid": {"checkpoints": [[0, 3], [3]]}, "checkpoints": None}, "",
     "each value may appear once ([0, 3] and [3] are one value)"),
    ({"grid": {"optimizer.lr": [0.1, 0.2]}}, "",
     "grid: 'optimizer.lr' is given both at the top level and in grid"),
    ({"optimizer": None, "grid": {"optimizer": [{"name": "sgd", "lr": 0.1}], "optimizer.lr": [0.1]}},
     "", "grid: 'optimizer.lr' is given twice (inside the 'optimizer' axis too)"),
    ({"grid": {"precision": []}}, "",
     "grid.precision: [] is not allowed; expected a non-empty list of values"),
    ({"grid": {"precision": "bf16"}}, "", "grid.precision: 'bf16' is not allowed"),
    ({"grid": ["precision"]}, "", "grid: ['precision'] is not allowed; expected a mapping"),
    ({"seeds": 250_001, "optimizer": {"name": "sgd"}, "grid": {"optimizer.lr": [0.1, 0.2]}}, "",
     "grid: 2 values x 2 width configs x 250001 seeds is 1000004 networks, more than 1000000 in one sweep"),
    ({"optimizer": {"name": "sgd"}, "grid": {"optimizer.lr": [0.1, -1]}}, "",
     "grid: optimizer.lr: -1 is not allowed; expected a number > 0"),
    ({"grid": {"dataset": ["synthetic", "imagenet"]}, "dataset": None}, "",
     "grid: dataset: 'imagenet' is not allowed; allowed: mnist, fashion-mnist, cifar10, cifar100, "
     "synthetic, synthetic-images"),
    ({"optimizer": {"lr": 0.1, "momentum": 0.9}, "grid": {"optimizer.name": ["sgd", "adam"]}}, "",
     "grid: the combination optimizer.name 'adam' does not fit: optimizer.momentum: 0.9 is not allowed; "
     "adam takes no momentum"),
    ({"optimizer": {"lr": 0.1}, "grid": {"optimizer.name": ["sgd", "adam"], "optimizer.momentum": [0, 0.9]}},
     "", "grid: the combination optimizer.name 'adam', optimizer.momentum 0.9 does not fit"),
]


@pytest.mark.parametrize(("override", "extra", "expected"), REFUSED)
def test_a_refused_grid_is_one_line_exit_2_and_no_store(tmp_path, capsys, override, extra, expected):
    store = tmp_path / "store"
    raw = {key: value for key, value in tiny_raw_config(store, **override).items() if value is not None}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False) + extra)
    assert main(["sweep", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("layerswap: error: ") and expected in err, err
    assert not store.exists()


def test_a_combination_too_large_for_memory_is_named_and_nothing_is_written(tmp_path, capsys):
    """With sgd every trial fits this machine, with adam (two more tensors per weight) it does not."""
    budget = cpu_budget([machine_memory_bytes()], local=True)
    data = load_dataset("synthetic")

    def need(width: int, optimizer: OptimizerSpec) -> int:
        shape = PackShape("mlp", (width, width), data.input_shape, data.n_classes, len(data.y_train),
                          len(data.y_test), 64, 2, optimizer_slots(optimizer))
        return trial_need_bytes(shape, 1, budget)

    low, high = 1, 2**20  # the smallest width where adam does not fit
    while low < high:
        middle = (low + high) // 2
        fits = need(middle, OptimizerSpec("adam", 0.1)) <= budget.bytes
        low, high = (middle + 1, high) if fits else (low, middle)
    assert need(low, OptimizerSpec("sgd", 0.1)) <= budget.bytes < need(low, OptimizerSpec("adam", 0.1))
    store = tmp_path / "store"
    raw = tiny_raw_config(store, widths=[[low, low]], seeds=1, epochs=2, checkpoints=[0, 2],
                          optimizer={"lr": 0.1}, grid={"optimizer.name": ["sgd", "adam"]},
                          resources={"cpu_per_trial": 1, "gpu_per_trial": 0})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["sweep", str(config), "--no-report"]) == 2
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert re.match(r"layerswap: error: grid configuration adam · [0-9a-f]{8}: a trial of 1 network\(s\) "
                    r"needs about ", line), line
    assert "this machine's memory is" in line
    assert not store.exists()


def test_a_configuration_its_family_cannot_build_is_named(tinybn, tmp_path):
    data = {"synthetic": load_dataset("synthetic")}
    spec = TrialSpec("synthetic", 0.0, 1.0, "tinybn", (6,), 0, 1, 8, OptimizerSpec("sgd", 0.1), (0, 1))
    odd = dataclasses.replace(spec, batch_size=16)
    plain = parse_config(tiny_raw_config(tmp_path))
    check_buildable(plain, [spec, odd], data)  # both build
    broken = {"synthetic": dataclasses.replace(data["synthetic"], x_train=data["synthetic"].x_train[:, :18],
                                               x_test=data["synthetic"].x_test[:, :18])}
    with pytest.raises(ConfigError, match=r"^model 'tinybn' with widths \[6\]: tinybn: a sample of \(18,\) "
                                          r"does not fill 4 rows \(on synthetic, samples of shape \[18\]\)$"):
        check_buildable(plain, [spec], broken)
    gridded = parse_config(lr_grid(tmp_path, [0.1, 0.05]))
    named = r"^grid: the configuration batch 16 · [0-9a-f]{8} does not fit: tinybn: "
    with pytest.raises(ConfigError, match=named):
        check_buildable(gridded, [odd, spec], broken)


def test_packs_hold_one_configuration_and_take_its_figures_from_its_spec(tmp_path):
    raw = tiny_raw_config(tmp_path, widths=[[16, 8]], seeds=4, optimizer={"lr": 0.1}, pack=2,
                          grid={"optimizer.name": ["sgd", "adam"], "batch_size": [16, 64]})
    del raw["batch_size"]
    config = parse_config(raw)
    specs = expand_grid(config)
    data = {"synthetic": load_dataset("synthetic")}
    lines: list[str] = []
    packs = make_packs(config, specs[::-1], data, slots=2, budget=None, log=lines.append)
    assert len(packs) == 8 and all(len({spec.config_id for spec in pack}) == 1 for pack in packs)
    shapes = {pack[0].config_id: pack_shape(pack[0], data["synthetic"]) for pack in packs}
    figures = {(shape.batch_size, shape.optimizer_slots) for shape in shapes.values()}
    assert figures == {(16, 0), (64, 0), (16, 2), (64, 2)}  # sgd: no state, adam: 2 tensors per weight
    adam_64 = next(s for s in specs if s.optimizer.name == "adam" and s.batch_size == 64)
    assert lines[0] == f"adam, batch 64 · {adam_64.config_id[:8]}: 4 networks in 2 trial(s) of 2"
    assert len(lines) == 4


def test_a_refused_grid_imports_nothing_heavy(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(lr_grid(tmp_path / "store", [0.1, 0.1])))
    script = (
        "import sys\nfrom orchestrator.cli import main\n"
        f"assert main(['sweep', {str(config)!r}]) == 2\n"
        "print(sorted(m for m in ('torch', 'ray', 'pyarrow', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]" and "each value may appear once" in result.stderr
