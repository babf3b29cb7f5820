"""The MLP's evaluate_variants: every variant at once, sharing leading layers, same results as evaluate."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from trainables.data.datasets import load_dataset
from trainables.measure.evaluation import evaluate
from trainables.measure.swaps import evaluate_variants, swap_variants
from trainables.models.mlp import FAMILY
from trainables.models.mlp_fast import variant_tree
from trainables.plan import MeasurementPlan, plan_keys
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.network import train_network

SPEC = TrialSpec(
    dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(32, 16, 8), seed=11,
    epochs=3, batch_size=64, optimizer=OptimizerSpec("sgd", 0.1), checkpoints=(0, 1, 3),
)
PLAN = MeasurementPlan(("reinit", "rerandomize", "transplant"), rerandomize_draws=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("synthetic").tensors("cpu")
    network = train_network(SPEC, data, torch.device("cpu"))
    keys = plan_keys(PLAN, network.model.layer_names, SPEC.checkpoints)
    return network, list(swap_variants(SPEC, network.model, network.checkpoints, keys)), data


def test_every_variant_gets_the_same_result_as_evaluating_it_alone(trained):
    network, variants, data = trained
    fast = evaluate_variants(FAMILY, network.model, variants, data.x_test, data.y_test)
    assert len(fast) == len(variants) == 3 + 4 * (2 + 2 + 1)
    for variant, result in zip(variants, fast, strict=True):
        alone = evaluate(network.model, variant.params, data.x_test, data.y_test)
        assert result.test_acc == alone.test_acc, (variant.kind, variant.layer, variant.epoch)
        assert result.test_loss == pytest.approx(alone.test_loss, rel=1e-6)
        assert result.n_test == alone.n_test
    accuracies = {(v.kind, v.epoch): r.test_acc for v, r in zip(variants, fast, strict=True)}
    assert accuracies[("none", 3)] > accuracies[("none", 0)]  # the network did learn


def test_variants_sharing_leading_layers_share_their_computation(trained):
    network, variants, _ = trained
    roots = variant_tree(network.model.layer_names, [variant.params for variant in variants])
    # fc1 differs only between checkpoints (none, reinit fc1 and transplant of the
    # other layers reuse them) and the two fresh fc1 draws: 3 + 2 first-layer passes.
    assert len(roots) == 3 + 2
    trained_fc1 = roots[(id(network.checkpoints[3]["fc1.weight"]), id(network.checkpoints[3]["fc1.bias"]))]
    # after the trained fc1: fc2 as trained, at epochs 0 and 1, and two draws
    assert len(trained_fc1.children) == 1 + 2 + 2


def test_a_family_without_a_fast_evaluator_gets_the_same_results_one_variant_at_a_time(trained):
    network, variants, data = trained
    generic = replace(FAMILY, evaluate_variants=None)
    fast = evaluate_variants(FAMILY, network.model, variants, data.x_test, data.y_test)
    slow = evaluate_variants(generic, network.model, variants, data.x_test, data.y_test)
    assert [r.test_acc for r in slow] == [r.test_acc for r in fast]
    assert [r.test_loss for r in slow] == pytest.approx([r.test_loss for r in fast], rel=1e-6)
    assert slow[0] == evaluate(network.model, variants[0].params, data.x_test, data.y_test)
