"""Configurations named by what tells them apart within their sweep, in one order."""

from __future__ import annotations

from orchestrator.catalog.naming import distinguishing_fields, flat_training_spec, name_configs

BASE = {"dataset": "mnist", "data_mean": 0.1307, "data_std": 0.3081, "model": "mlp", "widths": [256, 128],
        "seed": 3, "epochs": 5, "batch_size": 256, "checkpoints": [0, 5], "precision": "fp32",
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}}


def spec(**changes) -> dict[str, object]:
    raw = {**BASE, **{k: v for k, v in changes.items() if k != "optimizer"}}
    raw["optimizer"] = {**BASE["optimizer"], **changes.get("optimizer", {})}
    return flat_training_spec(raw)


def test_a_flat_spec_has_dotted_keys_and_no_seed() -> None:
    flat = spec()
    assert flat["optimizer.lr"] == 0.05 and flat["widths"] == (256, 128)
    assert "seed" not in flat and "optimizer" not in flat


def test_names_say_what_differs_in_one_order_numbers_by_size() -> None:
    names = name_configs({
        "cccccccc11112222": spec(optimizer={"lr": 0.1}),
        "aaaaaaaa11112222": spec(optimizer={"lr": 0.05}),
        "bbbbbbbb11112222": spec(optimizer={"lr": 0.01}, widths=[128, 64, 32]),
    })
    assert list(names.items()) == [
        ("bbbbbbbb11112222", "widths 128-64-32, lr 0.01 · bbbbbbbb"),
        ("aaaaaaaa11112222", "widths 256-128, lr 0.05 · aaaaaaaa"),
        ("cccccccc11112222", "widths 256-128, lr 0.1 · cccccccc"),
    ]


def test_one_configuration_is_named_by_model_and_widths() -> None:
    named = name_configs({"0123456789abcdef": spec()})
    assert named == {"0123456789abcdef": "mlp, widths 256-128 · 01234567"}


def test_fields_that_follow_from_another_stay_out_and_values_read_plainly() -> None:
    fashion = spec(dataset="fashion-mnist", data_mean=0.286, data_std=0.353, optimizer={"name": "adam"})
    assert distinguishing_fields([spec(), fashion]) == ["dataset", "optimizer.name"]  # not data_mean/std
    names = name_configs({"f" * 16: fashion, "e" * 16: spec(epochs=10, checkpoints=[0, 10])})
    assert list(names.values()) == [  # checkpoints follow from epochs: left out
        "fashion-mnist, adam, epochs 5 · ffffffff", "mnist, sgd, epochs 10 · eeeeeeee"
    ]
    # a field written only off its default (nesterov) is missing from the other spec: its default
    nesterov = name_configs({"1" * 16: spec(optimizer={"nesterov": True}), "2" * 16: spec()})
    assert list(nesterov.values()) == ["nesterov default · 22222222", "nesterov on · 11111111"]
