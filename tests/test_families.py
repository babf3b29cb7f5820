"""Model families: the registry, the layer rule, the generic paths against the MLP's fast ones, and
eval mode on a network with a BatchNorm (tests/bn_family.py, registered as ``tinybn``)."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from orchestrator.run.packing import largest_pack
from trainables import choices
from trainables.data.datasets import load_dataset
from trainables.measure.criticality import SUBSET_BATCH, FunctionalNoiseLoss, layer_criticalities
from trainables.measure.evaluation import evaluate
from trainables.measure.stored import network_movement
from trainables.measure.swaps import evaluate_variants, swap_variants
from trainables.models import registry
from trainables.models.family import Layer, generic_layers, layer_of_keys
from trainables.models.mlp import FAMILY as MLP_FAMILY
from trainables.models.mlp import MLP
from trainables.models.mlp_fast import MLPNoiseLoss
from trainables.plan import CriticalitySettings, MeasurementPlan, plan_keys
from trainables.seeding import derive_seed
from trainables.spec import OptimizerSpec, TrialSpec
from trainables.train.network import train_network
from trainables.train.pack import train_pack
from trainables.train.pack_shape import PackShape

CPU = torch.device("cpu")
SPEC_BN = TrialSpec(
    dataset="synthetic", data_mean=0.0, data_std=1.0, model="tinybn", widths=(16,), seed=5, epochs=2,
    batch_size=64, optimizer=OptimizerSpec("adam", 0.03), checkpoints=(0, 1, 2),
)
CHANNELS = SPEC_BN.widths[0]
SPEC_MLP = replace(SPEC_BN, model="mlp", widths=(12, 6), optimizer=OptimizerSpec("sgd", 0.1))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic").tensors(CPU)


@pytest.fixture
def trained_bn(tinybn, data):
    return train_network(SPEC_BN, data, CPU)


# --- the registry ---------------------------------------------------------------------


def test_every_family_answers_to_exactly_the_names_the_registry_maps_to_it():
    assert choices.MODELS == registry.MODELS == tuple(registry.FAMILIES)
    for name, module in registry.FAMILIES.items():
        family = registry.family(name)
        assert name in family.models
        assert {registry.FAMILIES[other] for other in family.models} == {module}
        assert set(family.default_widths) == set(family.models)
    assert registry.family("mlp").default_widths == {"mlp": (2048, 1024, 512, 256)}


def test_an_unknown_model_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError) as refused:
        registry.family("resnet7")
    assert str(refused.value) == (
        "model: 'resnet7' is not known; allowed: mlp, cnn, vgg11, vgg13, vgg16, vgg19, resnet20, resnet32, "
        "resnet44, resnet56, resnet110, resnet18, resnet34, custom"
    )


def test_the_registry_and_the_config_choices_import_no_torch():
    script = ("import sys, trainables.choices, trainables.models.registry\n"
              "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_family_sized_without_torch_declares_what_its_family_has():
    for name in registry.SIZED_WITHOUT_TORCH:
        assert registry.sizing(name) == registry.family(name).sizing, name
    assert registry.sizing("cnn") == registry.family("cnn").sizing
    assert registry.sizing("mlp").packable and not registry.sizing("cnn").variant_tree


# --- layers ---------------------------------------------------------------------------


def test_the_mlp_declares_the_layers_the_generic_rule_finds():
    model = MLP(20, (8, 6), 4)
    expected = tuple(
        Layer(f"fc{i}", i - 1, "linear", (f"fc{i}",), (f"fc{i}.weight", f"fc{i}.bias")) for i in (1, 2, 3)
    )
    assert MLP_FAMILY.layers(model) == generic_layers(model) == expected


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()


class ConvBNLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)


def test_a_batchnorm_joins_the_conv_registered_before_it_with_its_running_statistics():
    model = ConvBNLinear()
    conv, fc = generic_layers(model)
    assert conv == Layer(
        "block.conv", 0, "conv", ("block.conv", "block.bn"),
        ("block.conv.weight", "block.conv.bias", "block.bn.weight", "block.bn.bias"),
        ("block.bn.running_mean", "block.bn.running_var", "block.bn.num_batches_tracked"),
    )
    assert conv.swapped == conv.keys[:-1]  # the step counter stays the base network's
    assert fc == Layer("fc", 1, "linear", ("fc",), ("fc.weight", "fc.bias"))
    assert set(layer_of_keys((conv, fc))) == set(model.state_dict())


def test_a_layernorm_joins_the_linear_before_it_and_other_modules_are_named_by_their_class():
    model = nn.Sequential(OrderedDict(
        embed=nn.Embedding(10, 8), fc1=nn.Linear(8, 8), norm=nn.LayerNorm(8), act=nn.GELU(),
        head=nn.Linear(8, 3),
    ))
    assert generic_layers(model) == (
        Layer("embed", 0, "Embedding", ("embed",), ("embed.weight",)),
        Layer("fc1", 1, "linear", ("fc1", "norm"), ("fc1.weight", "fc1.bias", "norm.weight", "norm.bias")),
        Layer("head", 2, "linear", ("head",), ("head.weight", "head.bias")),
    )


# --- a network with a BatchNorm, through the generic paths ------------------------------


def test_training_runs_in_train_mode_and_moves_the_running_statistics(tinybn, trained_bn):
    assert [layer.name for layer in tinybn.layers(trained_bn.model)] == ["conv", "fc"]
    initial, trained = trained_bn.checkpoints[0], trained_bn.checkpoints[2]
    assert torch.equal(initial["bn.running_mean"], torch.zeros(CHANNELS))
    assert not torch.equal(trained["bn.running_mean"], initial["bn.running_mean"])
    assert int(trained["bn.num_batches_tracked"]) == 2 * 1024 // 64  # every step of both epochs


def test_swap_variants_move_running_statistics_with_their_layer(tinybn, trained_bn):
    model, checkpoints = trained_bn.model, trained_bn.checkpoints
    keys = [("reinit", "conv", 0, None, None, 0), ("rerandomize", "conv", None, None, 0, 0),
            ("transplant", "conv", 2, None, None, 0), ("interpolate", "conv", 0, 0.5, None, 0)]
    reinit, fresh, transplant, halfway = (v.params for v in swap_variants(SPEC_BN, model, checkpoints, keys))
    initial, trained = checkpoints[0], checkpoints[2]
    assert reinit["bn.running_var"] is initial["bn.running_var"]
    assert reinit["bn.num_batches_tracked"] is trained["bn.num_batches_tracked"]
    assert reinit["fc.weight"] is trained["fc.weight"]
    torch.manual_seed(derive_seed("rerandomize", SPEC_BN.seed, "conv", 0))
    drawn = nn.Conv2d(1, CHANNELS, 3, padding=1)  # the draw a freshly built conv makes
    assert torch.equal(fresh["conv.weight"], drawn.weight.detach())
    assert torch.equal(fresh["conv.bias"], drawn.bias.detach())
    assert torch.equal(fresh["bn.running_mean"], torch.zeros(CHANNELS))
    assert torch.equal(fresh["bn.running_var"], torch.ones(CHANNELS))
    assert torch.equal(fresh["bn.weight"], torch.ones(CHANNELS))
    assert torch.equal(fresh["bn.bias"], torch.zeros(CHANNELS))
    assert fresh["bn.num_batches_tracked"] is trained["bn.num_batches_tracked"]
    assert transplant["bn.running_mean"] is trained["bn.running_mean"]
    assert transplant["bn.num_batches_tracked"] is initial["bn.num_batches_tracked"]
    assert transplant["fc.bias"] is initial["fc.bias"]
    expected = (initial["bn.running_var"] + trained["bn.running_var"]) / 2
    torch.testing.assert_close(halfway["bn.running_var"], expected)


def test_evaluating_variants_writes_nothing_and_uses_the_running_statistics(tinybn, trained_bn, data):
    model, checkpoints = trained_bn.model, trained_bn.checkpoints
    before = {epoch: {key: t.clone() for key, t in state.items()} for epoch, state in checkpoints.items()}
    plan = MeasurementPlan(("reinit", "rerandomize", "transplant", "interpolate"), alphas=(0.0, 0.5, 1.0))
    keys = plan_keys(plan, ("conv", "fc"), SPEC_BN.checkpoints)
    variants = list(swap_variants(SPEC_BN, model, checkpoints, keys))
    results = evaluate_variants(tinybn, model, variants, data.x_test, data.y_test)
    for epoch, state in checkpoints.items():
        assert all(torch.equal(tensor, before[epoch][key]) for key, tensor in state.items())
    assert all(module.training for module in model.modules())  # its own mode, as before
    n = data.x_test.shape[0]
    for key in (("none", None, 2, None, None, 0), ("reinit", "conv", 0, None, None, 0)):
        network = copy.deepcopy(model)
        network.load_state_dict(variants[keys.index(key)].params)
        with torch.no_grad():
            eval_logits = network.eval()(data.x_test)
            train_logits = network.train()(data.x_test)  # normalised by the batch's own statistics
        result = results[keys.index(key)]
        assert result.test_acc == int((eval_logits.argmax(1) == data.y_test).sum()) / n
        eval_loss = F.cross_entropy(eval_logits, data.y_test).item()
        assert result.test_loss == pytest.approx(eval_loss, rel=1e-6)
        assert abs(result.test_loss - F.cross_entropy(train_logits, data.y_test).item()) > 5e-3


def test_criticality_and_movement_run_on_the_batchnorm_network(tinybn, trained_bn, data):
    model, checkpoints = trained_bn.model, trained_bn.checkpoints
    initial, trained = checkpoints[0], checkpoints[2]
    x, y = data.x_train[:256], data.y_train[:256]
    settings = CriticalitySettings(
        search="grid", alphas=3, sigmas=3, sigma_max=0.01, noise_samples=2, subset=256
    )
    reference, results = layer_criticalities(tinybn, model, initial, trained, x, y, 5, settings)
    assert reference == pytest.approx(evaluate(model, trained, x, y).test_loss, rel=1e-6)
    assert [result.layer for result in results] == ["conv", "fc"]
    conv = tinybn.layers(model)[0]
    moved = sum(float(((trained[key] - initial[key]).double() ** 2).sum()) for key in conv.parameters)
    assert results[0].sq_dist == pytest.approx(moved, rel=1e-12)
    assert int(trained["bn.num_batches_tracked"]) == 32  # nothing ran in train mode
    rows = network_movement(SPEC_BN, model, checkpoints)
    conv_params, fc_params = CHANNELS * 9 + CHANNELS + 2 * CHANNELS, CHANNELS * 4 + 4  # conv + bn, fc
    assert {row["layer"]: row["n_params"] for row in rows} == {"conv": conv_params, "fc": fc_params}


def test_a_family_without_a_stacked_form_trains_one_network_per_trial(tinybn, data):
    with pytest.raises(ValueError, match=r"^pack: model 'tinybn' has no stacked form"):
        train_pack([SPEC_BN, replace(SPEC_BN, seed=6)], data, CPU)
    shape = PackShape("tinybn", (CHANNELS,), (20,), 4, 1024, 512, 64, 3, optimizer_slots=0)
    assert not shape.packable and largest_pack(shape, None, threads=2) == 1
    assert PackShape("mlp", (6,), (20,), 4, 1024, 512, 64, 3).packable


# --- the MLP's fast paths against the generic ones --------------------------------------


@pytest.fixture(scope="module")
def trained_mlp(data):
    return train_network(SPEC_MLP, data, CPU)


def test_the_generic_noise_loss_equals_the_mlps_batched_one(trained_mlp, data):
    model, trained = trained_mlp.model, trained_mlp.checkpoints[2]
    x, y = data.x_train[:300], data.y_train[:300]
    fast = MLPNoiseLoss(model, trained, x, y, SUBSET_BATCH)
    generic = FunctionalNoiseLoss(model, trained, x, y, 128)  # batches of another size, too
    generator = torch.Generator().manual_seed(0)
    for layer in MLP_FAMILY.layers(model):
        copies = {key: trained[key] + 0.2 * torch.randn((3, *trained[key].shape), generator=generator)
                  for key in layer.parameters}
        assert generic(layer, copies, {}) == pytest.approx(fast(layer, copies, {}), rel=1e-6)
        assert generic.vmapped(copies, {}) == pytest.approx(generic.one_at_a_time(copies, {}), rel=1e-6)
    assert generic.unbatchable == set()


class Residual(nn.Module):
    """``out += shortcut(x)``: vmap cannot add batched copies of the shortcut into ``out`` in place."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.shortcut, self.fc = nn.Linear(20, 8), nn.Linear(20, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        out += self.shortcut(x)
        return self.fc(torch.relu(out))


def test_the_generic_noise_loss_runs_copies_one_at_a_time_where_vmap_cannot_batch_them(data):
    torch.manual_seed(0)
    model = Residual()
    trained = {key: value.detach() for key, value in model.state_dict().items()}
    x, y = data.x_train[:200], data.y_train[:200]
    generic = FunctionalNoiseLoss(model, trained, x, y, SUBSET_BATCH)
    generator = torch.Generator().manual_seed(1)
    for layer in generic_layers(model):
        copies = {key: trained[key] + 0.2 * torch.randn((3, *trained[key].shape), generator=generator)
                  for key in layer.parameters}
        assert generic(layer, copies, {}) == pytest.approx(generic.one_at_a_time(copies, {}), rel=1e-6)
    assert generic.unbatchable == {"shortcut"}  # body is the first layer (no vmap), fc batches


@pytest.mark.parametrize(
    "settings",
    [
        CriticalitySettings(alphas=4, sigmas=4, sigma_max=0.05, noise_samples=3, subset=300, search="grid"),
        CriticalitySettings(alphas=4, noise_samples=3, subset=300),
    ],
    ids=["grid", "bisect"],
)
def test_criticality_through_the_generic_path_finds_the_fast_paths_answer(trained_mlp, data, settings):
    model, checkpoints = trained_mlp.model, trained_mlp.checkpoints
    x, y = data.x_train[:300], data.y_train[:300]
    generic = replace(MLP_FAMILY, noise_loss=None)
    initial, trained = checkpoints[0], checkpoints[2]
    fast_loss, fast = layer_criticalities(MLP_FAMILY, model, initial, trained, x, y, 5, settings)
    slow_loss, slow = layer_criticalities(generic, model, initial, trained, x, y, 5, settings)
    assert slow_loss == pytest.approx(fast_loss, rel=1e-6)
    for a, b in zip(fast, slow, strict=True):
        found = (a.layer, a.alpha_star, a.sigma_star, a.pairs_evaluated, a.censored)
        assert found == (b.layer, b.alpha_star, b.sigma_star, b.pairs_evaluated, b.censored)
        assert b.sq_dist == a.sq_dist
        assert b.loss_at_star == pytest.approx(a.loss_at_star, rel=1e-6, nan_ok=True)
    assert any(result.pairs_evaluated > 1 for result in fast)  # the search did go through the grid
