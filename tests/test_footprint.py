"""The footprint measured from the network (meta device) against the MLP formulas it replaced."""

from __future__ import annotations

import pytest

from trainables.models.architectures import BuildOptions
from trainables.models.mlp_footprint import mlp_footprint
from trainables.train.footprint import measure_on_meta
from trainables.train.pack_shape import PackShape, measure_network

FLOAT, INDEX, EVAL_BATCH = 4, 8, 4096
CHANNELS = 6


def mlp_formulas(widths, n_features, n_classes, n_train, n_test, batch, n_checkpoints, slots) -> dict:
    """What trainables/train/footprint.py computed for an MLP before it measured the network."""
    dims = (n_features, *widths, n_classes)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    parameters = sum(i * o + o for i, o in pairs)
    flops = sum((2 if index == 0 else 3) * 2 * batch * i * o for index, (i, o) in enumerate(pairs))
    units = sum(widths) + n_classes
    n_samples = n_train + n_test
    data = n_samples * (n_features * FLOAT + INDEX)
    evaluation = 3 * min(EVAL_BATCH, n_test) * (n_features + units) * FLOAT
    weights = parameters * FLOAT * (2 + slots + n_checkpoints)
    step = batch * (n_features + 4 * units) * FLOAT + n_train * INDEX
    return {
        "parameters": parameters,
        "step_flops": flops,
        "step_bytes": FLOAT * (6 * parameters + batch * (2 * n_features + 5 * units)),
        "shared": data + evaluation,
        "per_network": weights + step,
        "load_transient": n_samples * n_features * FLOAT,
    }


CASES = {
    "seed": ((2048, 1024, 512, 256), 784, 10, 60_000, 10_000, 256, 6, 2),  # MNIST, Adam, 6 checkpoints
    "tiny": ((16, 8), 20, 4, 1024, 512, 64, 3, 0),  # the synthetic dataset, plain SGD
}


@pytest.mark.parametrize("case", CASES)
def test_the_measured_footprint_of_an_mlp_keeps_the_formulas_within_5_percent(case):
    widths, n_features, n_classes, n_train, n_test, batch, n_checkpoints, slots = CASES[case]
    shape = PackShape("mlp", widths, (n_features,), n_classes, n_train, n_test, batch, n_checkpoints, slots)
    expected = mlp_formulas(*CASES[case])
    assert shape.parameters == expected["parameters"]
    assert shape.step_flops == expected["step_flops"]  # the input's gradient is not computed
    assert shape.step_bytes == pytest.approx(expected["step_bytes"], rel=0.05)
    memory = shape.memory()
    assert memory.shared == pytest.approx(expected["shared"], rel=0.05)
    assert memory.per_network == pytest.approx(expected["per_network"], rel=0.05)
    assert memory.load_transient == expected["load_transient"]
    for pack in (1, 2, 8, 32):
        peak = expected["shared"] + max(expected["load_transient"], pack * expected["per_network"])
        assert memory.peak(pack) == pytest.approx(peak, rel=0.05)


@pytest.mark.parametrize("widths", [(), (8,), (16, 8), (3, 50, 7), (2048, 1024, 512, 256)])
@pytest.mark.parametrize("input_shape", [(20,), (1, 28, 28)])
@pytest.mark.parametrize("batch", [1, 64, EVAL_BATCH])
def test_the_mlp_formula_gives_what_the_meta_device_measures(widths, input_shape, batch):
    measured = measure_on_meta("mlp", widths, input_shape, 10, batch)
    assert mlp_footprint(widths, input_shape, 10, batch) == measured
    assert measure_network("mlp", widths, input_shape, 10, batch) == measured  # the driver's figures


def test_saved_activations_count_each_storage_once_and_no_weights():
    footprint = measure_network("mlp", (16, 8), (20,), 4, 64)
    # kept for backward: the input (fc1), each ReLU's output (which the next layer also keeps), the
    # log-softmax output, the labels and the loss's weight total; never a weight
    assert footprint.saved_bytes == 64 * (20 + 16 + 8 + 4) * FLOAT + 64 * INDEX + FLOAT
    assert footprint.layer_output_bytes == 64 * (16 + 8 + 4) * FLOAT
    assert footprint.input_bytes == 64 * 20 * FLOAT and footprint.buffer_bytes == 0
    assert measure_network("mlp", (16, 8), (20,), 4, 64) is footprint  # measured once


def test_a_batchnorm_network_is_measured_with_its_buffers_and_its_convolution(tinybn):
    footprint = measure_network("tinybn", (CHANNELS,), (20,), 4, 64)
    conv, bn, fc = CHANNELS * 9 + CHANNELS, 2 * CHANNELS, CHANNELS * 4 + 4
    assert footprint.parameters == conv + bn + fc
    assert footprint.buffer_bytes == 2 * CHANNELS * FLOAT + INDEX  # running mean and variance, step counter
    conv_flops = 2 * 64 * CHANNELS * 9 * 20  # per output element 9 multiply-adds; 4x5 outputs per channel
    fc_flops = 2 * 64 * CHANNELS * 4
    assert footprint.step_flops == 2 * conv_flops + 3 * fc_flops  # no gradient for the conv's input
    assert footprint.layer_output_bytes == 64 * (CHANNELS * 20 + 4) * FLOAT  # the BN's output, the logits
    shape = PackShape("tinybn", (CHANNELS,), (20,), 4, 1024, 512, 64, 3, optimizer_slots=1)
    weights = footprint.parameter_bytes * 3 + (footprint.parameter_bytes + footprint.buffer_bytes) * 3
    step = footprint.saved_bytes + 3 * footprint.layer_output_bytes + 1024 * INDEX
    assert shape.memory().per_network == weights + footprint.buffer_bytes + step


def test_the_generic_evaluation_is_sized_by_the_peak_of_one_forward_pass_not_all_layer_outputs():
    footprint = measure_network("cnn", (4,), (1, 8, 8), 3, 16, BuildOptions("batch"))
    conv_output = 16 * 4 * 8 * 8 * FLOAT
    # the conv's output is alive while its BN's (then the ReLU's) is made, then the pooled map
    assert 2 * conv_output < footprint.inference_peak_bytes <= 3 * conv_output
    deep = PackShape("resnet20", (16, 32, 64), (3, 32, 32), 10, 50_000, 10_000, 128, 10, 1,
                     options=BuildOptions("batch"))
    evaluated = measure_network("resnet20", (16, 32, 64), (3, 32, 32), 10, EVAL_BATCH, BuildOptions("batch"))
    data = 60_000 * (3 * 32 * 32 * FLOAT + INDEX)
    assert deep.memory().shared == data + evaluated.input_bytes + evaluated.inference_peak_bytes
    # every layer's output at once would be 2.4 times more: 3.1 GiB at 4096 images against 1.25 GiB
    assert evaluated.layer_output_bytes > 2 * evaluated.inference_peak_bytes
