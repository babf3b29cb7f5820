"""The MLP's footprint by formula: what :func:`trainables.train.footprint.measure_on_meta` measures of
an :class:`~trainables.models.mlp.MLP` on the meta device, without running it.

The driver sizes every trial before Ray is needed; torch's first meta-device step imports its meta
kernels and Dynamo (1.5 s of a tiny sweep's plan on an idle 2-core machine, 3 s and more under
load), which an MLP, the family most sweeps train, does not need. Each figure is the one the meta
device gives (float32, ``F`` flattened input features, ``h_k`` each layer's outputs per sample):
tests/test_footprint.py checks them against the meta device's on networks of several shapes.
"""

from __future__ import annotations

import math

from trainables.models.sizing import FamilySizing
from trainables.train.pack_shape import FLOAT_BYTES, INDEX_BYTES, NetworkFootprint


def mlp_footprint(
    widths: tuple[int, ...], input_shape: tuple[int, ...], n_classes: int, batch: int
) -> NetworkFootprint:
    """One training step of an MLP with hidden ``widths`` on samples of ``input_shape``, ``batch``
    samples at a time.

    FLOPs: per layer ``2 * batch * in * out`` forward and as much for the weight's
    gradient, and again for the input's gradient but in the first layer. Saved for
    backward: the input, each ReLU's output (which the next layer keeps too), the
    log-softmax output, the labels and the loss's weight total (one float). Inference
    peak, layer by layer: the layer's input, its transposed weight (a view of the weight,
    counted while it lives) and its output, then the input, the output and the ReLU's
    output; a flattened input (samples of more than one dimension) is a view counted as
    the first layer's input.
    """
    features = math.prod(input_shape)
    dims = (features, *widths, n_classes)
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    parameters = sum(fan_in * fan_out + fan_out for fan_in, fan_out in pairs)
    passes = [2] + [3] * (len(pairs) - 1)  # forward and weight gradient; the input's but in the first layer
    flops = sum(n * 2 * batch * fan_in * fan_out for n, (fan_in, fan_out) in zip(passes, pairs, strict=True))
    activation = batch * FLOAT_BYTES
    peak, held = 0, (features if len(input_shape) > 1 else 0) * activation
    for index, (fan_in, fan_out) in enumerate(pairs):
        output = fan_out * activation
        peak = max(peak, held + fan_in * fan_out * FLOAT_BYTES + output)
        if index < len(pairs) - 1:
            peak = max(peak, held + 2 * output)
        held = output
    return NetworkFootprint(
        batch=batch,
        parameters=parameters,
        parameter_bytes=parameters * FLOAT_BYTES,
        buffer_bytes=0,
        step_flops=flops,
        input_bytes=features * activation,
        saved_bytes=(features + sum(widths) + n_classes) * activation + batch * INDEX_BYTES + FLOAT_BYTES,
        layer_output_bytes=(sum(widths) + n_classes) * activation,
        inference_peak_bytes=peak,
    )


SIZING = FamilySizing(
    packable=True, auto_pack_devices=frozenset({"cpu", "cuda"}), variant_tree=True, footprint=mlp_footprint
)
"""The MLP family's sizing (:mod:`trainables.models.mlp` builds its family with it), known without torch."""
