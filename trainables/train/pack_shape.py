"""What a trial of K packed networks costs, as the driver plans it: parameters, FLOPs per step, bytes
moved, peak memory.

A network's figures (:class:`NetworkFootprint`) come from its family's formula where it has one
(the MLP's), else from the network built on the meta device and run once at the trial's batch size
(:func:`~trainables.train.footprint.measure_on_meta`). :class:`PackShape` turns them into the
memory estimate with which the driver plans packs and refuses what cannot fit before anything runs
(``orchestrator/run/packing.py``), and against which ``python -m benchmarks gpu_check`` sets a
measured peak on a machine that has only torch. Free of torch: an MLP sweep plans without it
(:func:`trainables.models.registry.sizing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from trainables.models import registry
from trainables.models.architectures import NO_OPTIONS, BuildOptions
from trainables.plan import EVAL_BATCH

FLOAT_BYTES = 4
INDEX_BYTES = 8


@dataclass(frozen=True)
class NetworkFootprint:
    """One network measured at one batch size (``batch``), one training step: counts and bytes.

    ``parameters``: trainable elements; ``parameter_bytes`` their bytes,
    ``buffer_bytes`` those of the state_dict's other tensors (BatchNorm
    running statistics). ``step_flops``: FLOPs of one forward and backward
    (matrix products and convolutions, as ``FlopCounterMode`` counts them; the
    input needs no gradient). ``input_bytes``: one float32 input batch.
    ``saved_bytes``: what autograd keeps for backward, each storage once,
    parameters and buffers not counted (the input batch and the labels are).
    ``layer_output_bytes``: the outputs of every layer (the output of its last
    module, a norm's where it has one). ``inference_peak_bytes``: the most bytes
    of tensors alive at once during one forward pass in eval mode without
    gradients (how the generic path evaluates a swap variant), the input batch
    not counted.
    """

    batch: int
    parameters: int
    parameter_bytes: int
    buffer_bytes: int
    step_flops: int
    input_bytes: int
    saved_bytes: int
    layer_output_bytes: int
    inference_peak_bytes: int


@lru_cache(maxsize=256)
def measure_network(
    model: str, widths: tuple[int, ...], input_shape: tuple[int, ...], n_classes: int, batch: int,
    options: BuildOptions = NO_OPTIONS,
) -> NetworkFootprint:
    """:class:`NetworkFootprint` of ``model`` with ``widths`` (and ``options``) on samples of
    ``input_shape``, ``batch`` samples per step: by the family's formula where it has one (the
    MLP's; the same figures, without torch and its meta device), else measured on the meta device
    (:func:`~trainables.train.footprint.measure_on_meta`). The driver asks many times: cached."""
    formula = registry.sizing(model).footprint
    if formula is not None:
        return formula(widths, input_shape, n_classes, batch)
    from trainables.train.footprint import measure_on_meta  # torch, and its meta device

    return measure_on_meta(model, widths, input_shape, n_classes, batch, options)


@dataclass(frozen=True)
class PackShape:
    """Everything that sizes one trial: the network, the data, the batch, what training keeps.

    ``input_shape`` is one sample's (``(1, 28, 28)`` for MNIST). ``optimizer_slots``:
    tensors the optimizer keeps per parameter (0 plain SGD, 1 SGD with
    momentum, 2 Adam). ``n_checkpoints``: saved copies of the weights (every
    checkpoint epoch, epoch 0 included).
    """

    model: str
    widths: tuple[int, ...]
    input_shape: tuple[int, ...]
    n_classes: int
    n_train: int
    n_test: int
    batch_size: int
    n_checkpoints: int
    optimizer_slots: int = 2
    options: BuildOptions = NO_OPTIONS
    """The network's norm (and a custom model's factory)."""

    @property
    def footprint(self) -> NetworkFootprint:
        """One network measured at the trial's batch size."""
        return measure_network(
            self.model, self.widths, self.input_shape, self.n_classes, self.batch_size, self.options
        )

    @property
    def parameters(self) -> int:
        """Trainable parameters of one network."""
        return self.footprint.parameters

    @property
    def step_flops(self) -> int:
        """FLOPs of one training step of one network (forward, weight and input gradients)."""
        return self.footprint.step_flops

    @property
    def packable(self) -> bool:
        """Whether the family trains networks together (has a stacked form)."""
        return registry.sizing(self.model).packable

    def packs_automatically(self, device: str) -> bool:
        """Whether ``pack: auto`` packs this family on ``device`` ("cpu", "cuda"): where its stacked
        form measured faster than separate networks."""
        return self.packable and device in registry.sizing(self.model).auto_pack_devices

    @property
    def step_bytes(self) -> int:
        """Bytes one training step of one network must move at least.

        Weights: read forward, read for the input gradient, gradient written, then
        the optimizer reads weight and gradient and writes the weight (6 passes).
        Activations: the input batch gathered (read + write), each layer's output
        written, read by the next layer and by backward, its gradient written and
        read (5 passes).
        """
        network = self.footprint
        return 6 * network.parameter_bytes + 2 * network.input_bytes + 5 * network.layer_output_bytes

    def memory(self) -> MemoryEstimate:
        """Upper estimate of a trial's tensor memory, split into shared and per-network bytes.

        Shared: the dataset (float32 inputs, int64 labels) and swap evaluation of
        :data:`EVAL_BATCH` test samples: with the family's variant tree (the
        MLP's) their inputs and every layer's outputs through up to three cached
        activation paths, on the generic path (one variant at a time) the input
        and the peak of one forward pass; while the dataset is normalised, one
        more float32 copy of it exists (``load_transient``, before any network).
        Per network: parameters, gradients, the optimizer's tensors, the
        checkpoint copies (buffers included), its shuffle order, and one step's
        activations: what autograd saves for backward, and per layer three more
        of its output's size (the output before the activation where that is not
        saved, its gradient and the gradient of the activation).
        """
        n_samples = self.n_train + self.n_test
        features = math.prod(self.input_shape)
        data = n_samples * (features * FLOAT_BYTES + INDEX_BYTES)
        evaluated = measure_network(
            self.model, self.widths, self.input_shape, self.n_classes, min(EVAL_BATCH, self.n_test),
            self.options,
        )
        if not registry.sizing(self.model).variant_tree:
            evaluation = evaluated.input_bytes + evaluated.inference_peak_bytes
        else:
            evaluation = 3 * (evaluated.input_bytes + evaluated.layer_output_bytes)
        network = self.footprint
        weights = (
            network.parameter_bytes * (2 + self.optimizer_slots)
            + (network.parameter_bytes + network.buffer_bytes) * self.n_checkpoints
            + network.buffer_bytes
        )
        step = network.saved_bytes + 3 * network.layer_output_bytes + self.n_train * INDEX_BYTES
        return MemoryEstimate(data + evaluation, weights + step, n_samples * features * FLOAT_BYTES)


@dataclass(frozen=True)
class MemoryEstimate:
    """A trial's tensor memory in bytes: ``shared`` once per trial, ``per_network`` per packed network."""

    shared: int
    per_network: int
    load_transient: int

    def peak(self, pack: int) -> int:
        """Peak bytes of a trial training ``pack`` networks (tensors only: no process overhead)."""
        return self.shared + max(self.load_transient, pack * self.per_network)
