"""What a trial of K packed networks costs: parameters, FLOPs per step, bytes moved, peak memory.

The figures are measured from the network itself, built on the meta device
(shapes only: no memory, no init, milliseconds) and run once at the trial's
batch size (:func:`measure_on_meta`; :func:`measure_network` asks a family's formula first,
the MLP's, and caches): FLOPs by
``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward,
the tensors autograd keeps for backward by
``torch.autograd.graph.saved_tensors_hooks``, every layer's output by forward
hooks, and the peak of the tensors alive during one forward pass in eval mode
without gradients (:class:`LiveBytes`). :class:`PackShape` turns them into the memory estimate with which the
driver plans packs and refuses what cannot fit before anything runs
(``orchestrator/run/packing.py``), and against which ``python -m benchmarks
gpu_check`` sets a measured peak on a machine that has only torch.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from trainables.measure.evaluation import EVAL_BATCH
from trainables.models import registry
from trainables.models.architectures import NO_OPTIONS, BuildOptions

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


class LiveBytes(TorchDispatchMode):
    """Within the block, the bytes of the tensors the ops create that are still referenced, and
    their peak (``peak``): each new storage counted once, until its tensor is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage._cdata not in self.live:
                    self.live[storage._cdata] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(tensor, self._free, storage._cdata)
        return out

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def output_bytes(output: object) -> int:
    """Bytes of the tensors a module returned (one tensor, or a tuple or list of them)."""
    if isinstance(output, torch.Tensor):
        return output.nbytes
    if isinstance(output, tuple | list):
        return sum(output_bytes(item) for item in output)
    return 0


@lru_cache(maxsize=256)
def measure_network(
    model: str, widths: tuple[int, ...], input_shape: tuple[int, ...], n_classes: int, batch: int,
    options: BuildOptions = NO_OPTIONS,
) -> NetworkFootprint:
    """:class:`NetworkFootprint` of ``model`` with ``widths`` (and ``options``) on samples of
    ``input_shape``, ``batch`` samples per step: by the family's formula where it has one (the
    MLP's; the same figures, without torch's first meta-device step and its seconds of imports),
    else measured on the meta device (:func:`measure_on_meta`). The driver asks many times: cached."""
    formula = registry.family(model).footprint
    if formula is not None:
        return formula(widths, input_shape, n_classes, batch)
    return measure_on_meta(model, widths, input_shape, n_classes, batch, options)


def measure_on_meta(
    model: str, widths: tuple[int, ...], input_shape: tuple[int, ...], n_classes: int, batch: int,
    options: BuildOptions = NO_OPTIONS,
) -> NetworkFootprint:
    """:class:`NetworkFootprint` of ``model`` measured on the meta device: one training step and one
    forward pass in eval mode (see the module docstring)."""
    with torch.device("meta"):
        network = registry.build_network(model, input_shape, widths, n_classes, options).train()
        x = torch.empty(batch, *input_shape, dtype=torch.float32)
        y = torch.zeros(batch, dtype=torch.int64)
    # A storage is known by its C++ StorageImpl (``_cdata``): on the meta device every data_ptr() is 0.
    own = {tensor.untyped_storage()._cdata for tensor in (*network.parameters(), *network.buffers())}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            saved.setdefault(storage._cdata, storage.nbytes())
        return tensor

    outputs: list[int] = []
    hooks = [
        network.get_submodule(layer.modules[-1]).register_forward_hook(
            lambda module, args, output: outputs.append(output_bytes(output))
        )
        for layer in registry.family(model).layers(network)
    ]
    try:
        with FlopCounterMode(display=False) as flops:
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
                loss = F.cross_entropy(network(x), y)
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    parameters = dict(network.named_parameters())
    buffers = [tensor for key, tensor in network.state_dict().items() if key not in parameters]
    live = LiveBytes()
    with torch.no_grad(), live:
        network.eval()(x)
    return NetworkFootprint(
        batch=batch,
        parameters=sum(p.numel() for p in parameters.values()),
        parameter_bytes=sum(p.nbytes for p in parameters.values()),
        buffer_bytes=sum(b.nbytes for b in buffers),
        step_flops=int(flops.get_total_flops()),
        input_bytes=x.nbytes,
        saved_bytes=sum(saved.values()),
        layer_output_bytes=sum(outputs),
        inference_peak_bytes=live.peak,
    )


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
        return registry.family(self.model).stack is not None

    def packs_automatically(self, device: str) -> bool:
        """Whether ``pack: auto`` packs this family on ``device`` ("cpu", "cuda"): where its stacked
        form measured faster than separate networks."""
        return self.packable and device in registry.family(self.model).auto_pack_devices

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
        if registry.family(self.model).evaluate_variants is None:
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
