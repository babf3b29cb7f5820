"""Network identity (store version 2): the trial id is the hash of the training spec only."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from trainables.spec import FactoryKwargs, OptimizerSpec, ScheduleSpec, TrialSpec

SEED_NET = TrialSpec(
    dataset="mnist", data_mean=0.1307, data_std=0.3081, model="mlp", widths=(2048, 1024, 512, 256),
    seed=0, epochs=25, batch_size=256, optimizer=OptimizerSpec("sgd", 0.01), checkpoints=(0, 1, 2, 5, 25),
)
SMALL_NET = TrialSpec(
    dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(16, 8), seed=3, epochs=3,
    batch_size=64, optimizer=OptimizerSpec("adam", 0.001, weight_decay=0.0001), checkpoints=(0, 1, 3),
    precision="bf16",
)
CONV_NET = TrialSpec(
    dataset="cifar10", data_mean=(0.4914, 0.4822, 0.4465), data_std=(0.2470, 0.2435, 0.2616),
    model="resnet20", widths=(16, 32, 64), seed=0, epochs=160, batch_size=128,
    optimizer=OptimizerSpec("sgd", 0.1, momentum=0.9, weight_decay=5e-4), checkpoints=(0, 1, 2, 5, 160),
    norm="batch", augment="flip-crop", schedule=ScheduleSpec("step", (80, 120), 0.1),
)
CUSTOM_NET = TrialSpec(
    dataset="synthetic-images", data_mean=(0.0, 0.0, 0.0), data_std=(1.0, 1.0, 1.0), model="custom",
    widths=(), seed=4, epochs=6, batch_size=32,
    optimizer=OptimizerSpec("sgd", 0.05, momentum=0.9, nesterov=True), checkpoints=(0, 6),
    schedule=ScheduleSpec("cosine", warmup_epochs=1),
    factory="tests.factories.layernorm_net:build", factory_kwargs=FactoryKwargs({"hidden": 32}),
)

# Golden values: if one of these changes, every stored network gets a new id. Do not update them;
# fix the change to the id function instead.
GOLDEN = {
    SEED_NET: (
        b'{"batch_size":256,"checkpoints":[0,1,2,5,25],"data_mean":0.1307,"data_std":0.3081,'
        b'"dataset":"mnist","epochs":25,"model":"mlp","optimizer":{"lr":0.01,"momentum":0.0,'
        b'"name":"sgd","weight_decay":0.0},"precision":"fp32","seed":0,"widths":[2048,1024,512,256]}',
        "7ea0436a495ee05a",
        "5cac0f93c4a1e7f5",
    ),
    SMALL_NET: (
        b'{"batch_size":64,"checkpoints":[0,1,3],"data_mean":0.0,"data_std":1.0,"dataset":"synthetic",'
        b'"epochs":3,"model":"mlp","optimizer":{"lr":0.001,"momentum":0.0,"name":"adam",'
        b'"weight_decay":0.0001},"precision":"bf16","seed":3,"widths":[16,8]}',
        "82b29af9733ff985",
        "20aa0a570d628728",
    ),
    # v3: a conv spec (per-channel normalisation, BatchNorm, augmentation, a step schedule) ...
    CONV_NET: (
        b'{"augment":"flip-crop","batch_size":128,"checkpoints":[0,1,2,5,160],"data_mean":[0.4914,0.4822,'
        b'0.4465],"data_std":[0.247,0.2435,0.2616],"dataset":"cifar10","epochs":160,"model":"resnet20",'
        b'"norm":"batch","optimizer":{"lr":0.1,"momentum":0.9,"name":"sgd","weight_decay":0.0005},'
        b'"precision":"fp32","schedule":{"gamma":0.1,"milestones":[80,120],"name":"step"},"seed":0,'
        b'"widths":[16,32,64]}',
        "e081176876bfffc3",
        "48fe22bf4a880d8b",
    ),
    # ... and a custom model with its factory and kwargs, Nesterov and a warmup-cosine schedule.
    CUSTOM_NET: (
        b'{"batch_size":32,"checkpoints":[0,6],"data_mean":[0.0,0.0,0.0],"data_std":[1.0,1.0,1.0],'
        b'"dataset":"synthetic-images","epochs":6,"factory":"tests.factories.layernorm_net:build",'
        b'"factory_kwargs":{"hidden":32},"model":"custom","optimizer":{"lr":0.05,"momentum":0.9,'
        b'"name":"sgd","nesterov":true,"weight_decay":0.0},"precision":"fp32","schedule":{"name":"cosine",'
        b'"warmup_epochs":1},"seed":4,"widths":[]}',
        "f193285f49dfa812",
        "92c44f0d16450f69",
    ),
}


def test_golden_spec_json_trial_ids_and_config_ids() -> None:
    for spec, (canonical, trial_id, config_id) in GOLDEN.items():
        assert spec.canonical_json() == canonical
        assert spec.trial_id == trial_id == hashlib.sha256(canonical).hexdigest()[:16]
        assert spec.config_id == config_id
        assert TrialSpec.from_dict(json.loads(canonical)) == spec  # spec.json reads back as the spec


def test_config_id_is_the_spec_without_its_seed() -> None:
    other_seed = dataclasses.replace(SEED_NET, seed=7)
    assert other_seed.trial_id != SEED_NET.trial_id
    assert other_seed.config_id == SEED_NET.config_id
    without_seed = {k: v for k, v in json.loads(GOLDEN[SEED_NET][0]).items() if k != "seed"}
    body = json.dumps(without_seed, sort_keys=True, separators=(",", ":")).encode()
    assert SEED_NET.config_id == hashlib.sha256(body).hexdigest()[:16]
    other_lr = dataclasses.replace(SEED_NET, optimizer=OptimizerSpec("sgd", 0.5))
    assert other_lr.config_id != SEED_NET.config_id


@dataclasses.dataclass(frozen=True)
class GrownSpec(TrialSpec):
    """The spec as it might grow later: an architecture option with a default."""

    dropout: float = 0.0


def test_a_new_field_at_its_default_keeps_every_id() -> None:
    grown = GrownSpec(**{f.name: getattr(SEED_NET, f.name) for f in dataclasses.fields(SEED_NET)})
    assert grown.canonical_json() == SEED_NET.canonical_json()
    assert (grown.trial_id, grown.config_id) == (SEED_NET.trial_id, SEED_NET.config_id)
    changed = dataclasses.replace(grown, dropout=0.5)
    assert b'"dropout":0.5' in changed.canonical_json()
    assert changed.trial_id != SEED_NET.trial_id and changed.config_id != SEED_NET.config_id


def test_measurement_settings_are_not_part_of_the_spec() -> None:
    names = {f.name for f in dataclasses.fields(TrialSpec)}
    assert not names & {"swaps", "rerandomize_draws", "alphas", "criticality"}
    # A version-1 spec.json (which held the swap plan) reads as the same training spec.
    v1 = {**SEED_NET.to_dict(), "swaps": ["reinit"], "rerandomize_draws": 2}
    assert TrialSpec.from_dict(v1) == SEED_NET
    assert TrialSpec.from_dict(SEED_NET.to_dict()) == SEED_NET


@dataclasses.dataclass(frozen=True)
class GrownOptimizer(OptimizerSpec):
    """The optimizer block as it might grow later (v3 adds ``nesterov``)."""

    nesterov: bool = False


def test_a_new_nested_field_at_its_default_keeps_every_id() -> None:
    grown = dataclasses.replace(SEED_NET, optimizer=GrownOptimizer("sgd", 0.01))
    assert grown.canonical_json() == SEED_NET.canonical_json()
    assert (grown.trial_id, grown.config_id) == (SEED_NET.trial_id, SEED_NET.config_id)
    changed = dataclasses.replace(SEED_NET, optimizer=GrownOptimizer("sgd", 0.01, nesterov=True))
    assert b'"nesterov":true' in changed.canonical_json()
    assert changed.trial_id != SEED_NET.trial_id and changed.config_id != SEED_NET.config_id


def test_a_new_field_off_its_default_keeps_networks_out_of_one_pack() -> None:
    from trainables.train.pack import check_pack

    grown = GrownSpec(**{f.name: getattr(SEED_NET, f.name) for f in dataclasses.fields(SEED_NET)})
    check_pack([grown, dataclasses.replace(grown, seed=1)])  # seeds of one configuration: one pack
    with pytest.raises(ValueError, match=r"differ in dropout \(0.5 vs None\)"):
        check_pack([dataclasses.replace(grown, dropout=0.5), dataclasses.replace(grown, seed=1)])
