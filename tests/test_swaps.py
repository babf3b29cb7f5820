"""Swap evaluation on a hand-built 2-2-2 network whose every swap accuracy is known."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.measure.evaluation import evaluate
from trainables.measure.swaps import swap_variants
from trainables.models.mlp import MLP
from trainables.plan import MeasurementPlan, plan_keys
from trainables.seeding import derive_seed
from trainables.spec import OptimizerSpec, TrialSpec

IDENTITY = torch.eye(2)
FLIP = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
ZERO = torch.zeros(2, 2)


def state(fc1_w, fc1_b, fc2_w, fc2_b) -> dict[str, torch.Tensor]:
    return {
        "fc1.weight": fc1_w, "fc1.bias": torch.tensor(fc1_b),
        "fc2.weight": fc2_w, "fc2.bias": torch.tensor(fc2_b),
    }


# Test set: three points of class 0 at (1, 0), one of class 1 at (0, 1).
X = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
Y = torch.tensor([0, 0, 0, 1])

# epoch 0: fc1 flips the inputs, fc2 ignores them and always says class 0 -> 3/4 right.
# epoch 1: fc1 flips, fc2 flips back                                       -> 4/4 right.
# epoch 2 (trained): both identity                                         -> 4/4 right.
CHECKPOINTS = {
    0: state(FLIP, [0.0, 0.0], ZERO, [1.0, 0.0]),
    1: state(FLIP, [0.0, 0.0], FLIP, [0.0, 0.0]),
    2: state(IDENTITY, [0.0, 0.0], IDENTITY, [0.0, 0.0]),
}

SPEC = TrialSpec(
    dataset="synthetic", data_mean=0.0, data_std=1.0, model="mlp", widths=(2,), seed=7,
    epochs=2, batch_size=4, optimizer=OptimizerSpec("sgd", 0.1), checkpoints=(0, 1, 2),
)
PLAN = MeasurementPlan(("reinit", "rerandomize", "transplant"), rerandomize_draws=2)

EXPECTED_ACCURACY = {
    ("none", None, 0): 0.75,
    ("none", None, 1): 1.0,
    ("none", None, 2): 1.0,
    ("reinit", "fc1", 0): 0.0,   # flip, then identity: every point lands on the wrong class
    ("reinit", "fc1", 1): 0.0,
    ("reinit", "fc2", 0): 0.75,  # identity, then "always class 0"
    ("reinit", "fc2", 1): 0.0,   # identity, then flip
    ("transplant", "fc1", 2): 0.75,  # trained fc1 into the epoch-0 net: still "always 0"
    ("transplant", "fc2", 2): 0.0,   # epoch-0 flip feeding the trained identity
}


def variants_by_key() -> dict:
    model = MLP(2, (2,), 2)
    variants = swap_variants(SPEC, model, CHECKPOINTS, plan_keys(PLAN, model.layer_names, SPEC.checkpoints))
    return {(v.kind, v.layer, v.epoch, v.draw): v for v in variants}, model


def test_every_swap_accuracy_matches_the_hand_computation():
    variants, model = variants_by_key()
    measured = {
        (kind, layer, epoch): evaluate(model, v.params, X, Y).test_acc
        for (kind, layer, epoch, _), v in variants.items()
        if kind != "rerandomize"
    }
    assert measured == EXPECTED_ACCURACY


def test_trained_loss_is_the_exact_cross_entropy():
    variants, model = variants_by_key()
    result = evaluate(model, variants[("none", None, 2, None)].params, X, Y)
    # logits are the one-hot input, so every point has loss log(1 + e^-1)
    assert math.isclose(result.test_loss, math.log(1 + math.exp(-1)), rel_tol=1e-6)
    assert result.n_test == 4


def test_rerandomize_is_a_seeded_fresh_draw_from_the_init_distribution():
    variants, model = variants_by_key()
    for layer in ("fc1", "fc2"):
        for draw in range(2):
            torch.manual_seed(derive_seed("rerandomize", SPEC.seed, layer, draw))
            fresh = nn.Linear(2, 2)
            params = variants[("rerandomize", layer, None, draw)].params
            assert torch.equal(params[f"{layer}.weight"], fresh.weight.detach())
            assert torch.equal(params[f"{layer}.bias"], fresh.bias.detach())
            other = "fc2" if layer == "fc1" else "fc1"
            assert params[f"{other}.weight"] is CHECKPOINTS[2][f"{other}.weight"]
            # recompute the accuracy by hand with the drawn layer in place
            drawn = {f"{layer}.weight": fresh.weight.detach(), f"{layer}.bias": fresh.bias.detach()}
            net = {**CHECKPOINTS[2], **drawn}
            hidden = torch.relu(X @ net["fc1.weight"].T + net["fc1.bias"])
            logits = hidden @ net["fc2.weight"].T + net["fc2.bias"]
            expected = (logits.argmax(1) == Y).float().mean().item()
            assert evaluate(model, params, X, Y).test_acc == expected
    assert not torch.equal(
        variants[("rerandomize", "fc1", None, 0)].params["fc1.weight"],
        variants[("rerandomize", "fc1", None, 1)].params["fc1.weight"],
    )


def test_variants_share_tensors_instead_of_copying_the_model():
    variants, _ = variants_by_key()
    reinit = variants[("reinit", "fc2", 0, None)].params
    assert reinit["fc1.weight"] is CHECKPOINTS[2]["fc1.weight"]
    assert reinit["fc2.weight"] is CHECKPOINTS[0]["fc2.weight"]
    kinds = [key[0] for key in variants]
    assert kinds.count("none") == 3 and kinds.count("reinit") == 4
    assert kinds.count("rerandomize") == 4 and kinds.count("transplant") == 2
