"""Packed conv nets: K networks stacked (``stack_module_state`` + ``vmap``, BatchNorm buffers stacked)
agree with K networks trained one by one; ``pack: auto`` packs them only where measured faster."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from orchestrator.run.packing import largest_pack
from trainables.data.datasets import load_dataset
from trainables.models.architectures import BuildOptions
from trainables.spec import OptimizerSpec, ScheduleSpec, TrialSpec
from trainables.train.network import train_network
from trainables.train.pack import train_pack
from trainables.train.pack_shape import PackShape

CPU = torch.device("cpu")
# A vmapped conv is a grouped convolution: other kernels and summation order than one network's,
# so the weights part in the last float32 bits each step; after 12 steps of SGD with momentum they
# differ by ~1e-6. A real difference (a wrong batch, BN statistics of another network) moves them
# by 1e-2 and more. (A ResNet this small is chaotic on these 8x8 images under a cosine schedule or
# flip-crop: a 1e-7 relative change of its initial weights moves its running statistics by 0.06
# within 6 steps, packed or not; so the ResNet case trains at a constant rate, unaugmented.)
ATOL, RTOL = 1e-4, 1e-3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic-images").tensors(CPU)


COSINE = ScheduleSpec("cosine")


@pytest.mark.parametrize(("model", "widths", "augment", "schedule"), [
    ("cnn", (4, 8), "none", COSINE), ("cnn", (4, 8), "flip-crop", COSINE),
    ("resnet20", (4, 4, 8), "none", ScheduleSpec()),
])
def test_a_packed_conv_net_trains_as_it_does_alone(data, model, widths, augment, schedule):
    base = TrialSpec(
        dataset="synthetic-images", data_mean=(0.0,) * 3, data_std=(1.0,) * 3, model=model, widths=widths,
        seed=0, epochs=2, batch_size=64,
        optimizer=OptimizerSpec("sgd", 0.05, momentum=0.9, weight_decay=5e-4), checkpoints=(0, 1, 2),
        norm="batch", augment=augment, schedule=schedule,
    )
    specs = [replace(base, seed=seed) for seed in (3, 4)]
    packed = train_pack(specs, data, CPU)
    for spec, network in zip(specs, packed, strict=True):
        alone = train_network(spec, data, CPU)
        assert list(network.checkpoints[2]) == list(alone.checkpoints[2])  # the unstacked keys, in order
        for key, tensor in alone.checkpoints[0].items():
            assert torch.equal(network.checkpoints[0][key], tensor), key  # epoch 0: bit for bit
        for key, tensor in alone.checkpoints[2].items():
            if tensor.is_floating_point():
                torch.testing.assert_close(network.checkpoints[2][key], tensor, atol=ATOL, rtol=RTOL, msg=key)
            else:
                assert torch.equal(network.checkpoints[2][key], tensor), key  # BN step counters
        moved = network.checkpoints[2]["conv1.weight"] - network.checkpoints[0]["conv1.weight"]
        assert moved.abs().max() > 100 * ATOL  # they trained
    assert not torch.allclose(packed[0].checkpoints[2]["bn1.running_mean"],
                              packed[1].checkpoints[2]["bn1.running_mean"])  # each its own statistics


def test_pack_auto_packs_a_conv_family_only_on_devices_where_its_stack_measured_faster():
    shape = PackShape("cnn", (4, 8), (3, 8, 8), 4, 384, 256, 64, 3, 1, options=BuildOptions("batch"))
    assert shape.packable  # pack: N trains them stacked
    assert not shape.packs_automatically("cpu") and not shape.packs_automatically("cuda")
    assert largest_pack(shape, None, threads=2) == 1
    mlp = PackShape("mlp", (8,), (20,), 4, 1024, 512, 64, 3, 0)
    assert mlp.packs_automatically("cpu") and largest_pack(mlp, None, threads=2) > 1
