"""The conv families (cnn, VGG, CIFAR ResNets, ResNet-18/34): parameter counts by hand, forward
shapes, layers in forward order with their keys, state_dict keys as DESIGN.md says, groups, default
initialisation, and widths that do not fit refused in one line without torch."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from trainables.models import registry
from trainables.models.architectures import BuildOptions, check_architecture, default_widths

BN = BuildOptions(norm="batch")
NO_BN = BuildOptions(norm="none")
CIFAR = (3, 32, 32)


def built(model: str, widths=None, options=BN, shape=CIFAR, n_classes=10, meta=True) -> nn.Module:
    with torch.device("meta" if meta else "cpu"):
        return registry.build_network(model, shape, widths or default_widths(model), n_classes, options)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int = 3, bias: bool = False) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def resnet_by_hand(widths: tuple[int, ...], blocks: tuple[int, ...], n_classes: int = 10) -> int:
    """Stem, basic blocks (two 3x3 convs + BN each, a 1x1 conv + BN shortcut where the size changes), fc."""
    total, fan_in = conv(3, widths[0]) + bn(widths[0]), widths[0]
    for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
        for block in range(count):
            c_in = fan_in if block == 0 else width
            total += conv(c_in, width) + bn(width) + conv(width, width) + bn(width)
            if block == 0 and (stage > 0 or c_in != width):
                total += conv(c_in, width, k=1) + bn(width)
        fan_in = width
    return total + widths[-1] * n_classes + n_classes


# --- parameter counts -----------------------------------------------------------------


def test_resnet20_has_0_27_million_parameters_and_every_depth_its_hand_count():
    assert n_params(built("resnet20")) == resnet_by_hand((16, 32, 64), (3, 3, 3)) == 272_474
    for depth in (32, 44, 56, 110):
        n = (depth - 2) // 6
        assert n_params(built(f"resnet{depth}")) == resnet_by_hand((16, 32, 64), (n, n, n))
    assert n_params(built("resnet56")) == 855_770  # 0.85 M in He et al. 2016


def test_resnet18_and_34_have_torchvisions_counts_with_a_3x3_stem():
    assert n_params(built("resnet18")) == resnet_by_hand((64, 128, 256, 512), (2, 2, 2, 2)) == 11_173_962
    assert n_params(built("resnet34")) == resnet_by_hand((64, 128, 256, 512), (3, 4, 6, 3))
    vision = torchvision.models.resnet18(num_classes=10)
    stem_difference = conv(3, 64, k=7) - conv(3, 64)
    assert n_params(vision) - stem_difference == n_params(built("resnet18"))


def test_vgg11_with_batchnorm_on_cifar_has_about_9_2_million_parameters():
    plan = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    by_hand = sum(conv(a, b) + bn(b) for a, b in plan) + 512 * 10 + 10
    assert n_params(built("vgg11")) == by_hand == 9_228_362
    without_bn = sum(conv(a, b, bias=True) for a, b in plan) + 512 * 10 + 10
    assert n_params(built("vgg11", options=NO_BN)) == without_bn
    for name, convs in (("vgg13", 10), ("vgg16", 13), ("vgg19", 16)):
        assert sum(isinstance(m, nn.Conv2d) for m in built(name).modules()) == convs


def test_cnn_counts_its_convs_and_head():
    assert n_params(built("cnn", (8, 16), shape=(1, 28, 28))) == (
        conv(1, 8) + bn(8) + conv(8, 16) + bn(16) + 16 * 10 + 10
    )
    assert n_params(built("cnn", (8,), NO_BN, shape=(1, 28, 28))) == conv(1, 8, bias=True) + 8 * 10 + 10


# --- forward, layers, keys --------------------------------------------------------------

SMALL = {
    "cnn": ((4, 8), (3, 8, 8)),
    "vgg11": ((4, 4, 8, 8, 8), (3, 16, 16)),
    "vgg16": ((4, 4, 8, 8, 8), (3, 16, 16)),
    "resnet20": ((4, 8, 8), (3, 8, 8)),
    "resnet18": ((4, 4, 8, 8), (3, 8, 8)),
}


@pytest.mark.parametrize("options", [BN, NO_BN], ids=["batch", "none"])
@pytest.mark.parametrize("model", list(SMALL))
def test_layers_are_in_forward_order_and_own_every_tensor(model, options):
    widths, shape = SMALL[model]
    torch.manual_seed(0)
    network = built(model, widths, options, shape, n_classes=5, meta=False)
    layers = registry.family(model).layers(network)
    ran: list[str] = []
    for path, module in network.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(lambda m, i, o, path=path: ran.append(path))
    assert network(torch.randn(2, *shape)).shape == (2, 5)
    assert [layer.modules[0] for layer in layers] == ran  # forward order
    assert [layer.index for layer in layers] == list(range(len(layers)))
    keys = [key for layer in layers for key in layer.keys]
    assert sorted(keys) == sorted(network.state_dict())  # each tensor in exactly one layer
    for layer in layers:
        owned = {key.rsplit(".", 1)[0] for key in layer.keys}
        assert owned == set(layer.modules)
        if options is BN and layer.module_type == "conv":
            assert len(layer.modules) == 2
            assert isinstance(network.get_submodule(layer.modules[1]), nn.BatchNorm2d)
            assert {key.rsplit(".", 1)[1] for key in layer.buffers} == {
                "running_mean", "running_var", "num_batches_tracked"}
        else:
            assert layer.buffers == ()
    assert layers[-1].name == "fc" and layers[-1].module_type == "linear"


def test_cnn_and_vgg_keys_are_numbered_convs_bns_and_fc():
    keys = list(built("cnn", (4, 8), shape=(1, 28, 28)).state_dict())
    bn_keys = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert keys == [
        "conv1.weight", *[f"bn1.{k}" for k in bn_keys], "conv2.weight", *[f"bn2.{k}" for k in bn_keys],
        "fc.weight", "fc.bias",
    ]
    assert list(built("cnn", (4,), NO_BN, shape=(1, 28, 28)).state_dict()) == [
        "conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    vgg = built("vgg11")
    names = [layer.name for layer in registry.family("vgg11").layers(vgg)]
    assert names == [f"conv{i}" for i in range(1, 9)] + ["fc"]
    assert all(vgg.get_submodule(f"conv{i}").kernel_size == (3, 3) for i in range(1, 9))
    assert vgg.state_dict()["bn8.running_var"].shape == (512,)


def test_resnet_keys_are_torchvisions():
    ours = {key: tuple(t.shape) for key, t in built("resnet18").state_dict().items()}
    vision = torchvision.models.resnet18(num_classes=10)
    theirs = {key: tuple(t.shape) for key, t in vision.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert {key for key in ours if ours[key] != theirs[key]} == {"conv1.weight"}  # 3x3 stem, not 7x7
    names = [layer.name for layer in registry.family("resnet20").layers(built("resnet20"))]
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert names[7:11] == ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample", "layer2.1.conv1"]
    assert len(names) == 19 + 2 + 1  # 19 convs, 2 shortcuts, fc
    assert len(registry.family("resnet56").layers(built("resnet56"))) == 1 + 54 + 2 + 1  # and fc
    no_bn = built("resnet20", options=NO_BN).state_dict()
    assert "layer2.0.downsample.0.bias" in no_bn and not any(".bn" in key for key in no_bn)


def test_groups_are_blocks_and_stages_whose_names_are_no_layer_names():
    resnet = built("resnet20")
    groups = registry.family("resnet20").groups(resnet)
    assert [(g.name, g.level) for g in groups[:5]] == [
        ("layer1.0", "block"), ("layer1.1", "block"), ("layer1.2", "block"), ("layer1", "stage"),
        ("layer2.0", "block")]
    assert groups[4].layers == ("layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample")
    stage2 = next(g for g in groups if g.name == "layer2")
    assert len(stage2.layers) == 7 and stage2.layers[0] == "layer2.0.conv1"
    vgg = built("vgg11")
    assert [(g.name, g.layers) for g in registry.family("vgg11").groups(vgg)] == [
        ("stage1", ("conv1",)), ("stage2", ("conv2",)), ("stage3", ("conv3", "conv4")),
        ("stage4", ("conv5", "conv6")), ("stage5", ("conv7", "conv8"))]
    assert registry.family("cnn").groups is None
    for model in ("resnet20", "resnet18", "vgg19"):
        network = built(model)
        layer_names = {layer.name for layer in registry.family(model).layers(network)}
        assert not layer_names & {group.name for group in registry.family(model).groups(network)}


def test_every_module_has_pytorchs_default_initialisation():
    torch.manual_seed(3)
    network = built("resnet20", (8, 8, 16), shape=(3, 8, 8), meta=False)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))
        if isinstance(module, nn.Conv2d):  # kaiming_uniform(a=sqrt 5): |w| <= 1/sqrt(fan_in)
            bound = 1 / math.sqrt(module.weight[0].numel())
            assert bound * 0.9 < float(module.weight.detach().abs().max()) <= bound


# --- widths that do not fit ---------------------------------------------------------------


@pytest.mark.parametrize(("model", "widths", "dataset", "shape", "message"), [
    ("vgg11", (64, 128, 256), "cifar10", CIFAR,
     "widths: [64, 128, 256] is not allowed for model vgg11; expected 5 numbers, the channels of the 5 "
     "stages (default [64, 128, 256, 512, 512])"),
    ("resnet18", (16, 32, 64), "cifar10", CIFAR,
     "widths: [16, 32, 64] is not allowed for model resnet18; expected 4 numbers, the channels of the 4 "
     "stages (default [64, 128, 256, 512])"),
    ("cnn", (4, 4, 4, 4), "synthetic-images", (3, 8, 8),
     "widths: [4, 4, 4, 4] is not allowed for model cnn on synthetic-images: 4 2x2 max-pools take a 8x8 "
     "image below 1 pixel; use at most 3 widths"),
    ("vgg11", (4, 4, 4, 4, 4), "synthetic-images", (3, 8, 8),
     "widths: [4, 4, 4, 4, 4] is not allowed for model vgg11 on synthetic-images: 4 2x2 max-pools take a "
     "8x8 image below 1 pixel; use larger images"),
    ("resnet20", (4, 4, 4), "synthetic", (20,),
     "model: 'resnet20' is not allowed with dataset synthetic (samples of shape (20,)); it needs images "
     "(C, H, W), e.g. dataset mnist, fashion-mnist, cifar10, cifar100 or synthetic-images"),
])
def test_widths_that_do_not_fit_are_one_line(model, widths, dataset, shape, message):
    with pytest.raises(ValueError) as refused:
        check_architecture(model, widths, "batch", dataset, shape)
    assert str(refused.value) == message


def test_a_refused_conv_config_imports_no_torch(tmp_path):
    config = tmp_path / "vgg.yaml"
    config.write_text("name: v\ndataset: cifar10\nmodel: vgg11\nwidths: [[64, 128]]\nseeds: 1\nepochs: 1\n"
                      "batch_size: 8\noptimizer: {name: sgd, lr: 0.1}\nswaps: [reinit]\n")
    script = ("import sys\nfrom orchestrator.cli import main\n"
              f"assert main(['sweep', {str(config)!r}]) == 2\n"
              "print(sorted(m for m in ('torch', 'ray', 'pyarrow') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "[]", result.stderr
    assert result.stderr.splitlines() == [
        "layerswap: error: widths: [64, 128] is not allowed for model vgg11; expected 5 numbers, the "
        "channels of the 5 stages (default [64, 128, 256, 512, 512])"]
