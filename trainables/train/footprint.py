"""What a trial of K packed networks costs: parameters, matmul FLOPs per step, peak memory.

Pure arithmetic over a :class:`PackShape` (no torch), so the driver can plan
packs and refuse what cannot fit before anything runs
(``orchestrator/run/packing.py``), and ``python -m benchmarks gpu_check`` can set a
measured peak against the same estimate on a machine that has only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT_BYTES = 4
INDEX_BYTES = 8
EVAL_BATCH = 4096
"""Test samples evaluated at once during swap measurement."""


@dataclass(frozen=True)
class PackShape:
    """Everything that sizes one trial: the network, the data, the batch, what training keeps.

    ``optimizer_slots``: tensors the optimizer keeps per parameter (0 plain
    SGD, 1 SGD with momentum, 2 Adam). ``n_checkpoints``: saved copies of the
    weights (every checkpoint epoch, epoch 0 included).
    """

    widths: tuple[int, ...]
    n_features: int
    n_classes: int
    n_train: int
    n_test: int
    batch_size: int
    n_checkpoints: int
    optimizer_slots: int = 2

    @property
    def parameters(self) -> int:
        """Weights and biases of one MLP ``n_features -> widths -> n_classes``."""
        dims = (self.n_features, *self.widths, self.n_classes)
        return sum(i * o + o for i, o in zip(dims[:-1], dims[1:], strict=True))

    @property
    def step_flops(self) -> int:
        """Matmul FLOPs of one training step of one network (forward, weight and input gradients).

        The first layer needs no input gradient (its input is data), so a weight of
        shape (out, in) costs ``2*B*in*out`` forward, as much for its gradient, and
        as much again for its input's gradient except in the first layer.
        """
        dims = (self.n_features, *self.widths, self.n_classes)
        flops = 0
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            passes = 2 if index == 0 else 3
            flops += passes * 2 * self.batch_size * fan_in * fan_out
        return flops

    @property
    def step_bytes(self) -> int:
        """Bytes one training step of one network must move at least (float32).

        Weights: read forward, read for the input gradient, gradient written, then
        the optimizer reads weight and gradient and writes the weight (6 passes).
        Activations: the input batch gathered (read + write), each layer's output
        written, read by the next layer and by backward, its gradient written and
        read (5 passes).
        """
        units = sum(self.widths) + self.n_classes
        return FLOAT_BYTES * (6 * self.parameters + self.batch_size * (2 * self.n_features + 5 * units))

    def memory(self) -> MemoryEstimate:
        """Upper estimate of a trial's tensor memory, split into shared and per-network bytes.

        Shared: the dataset (float32 features, int64 labels) and swap evaluation of
        :data:`EVAL_BATCH` test samples through up to three cached activation
        paths; while the dataset is normalised, one more float32 copy of it exists
        (``load_transient``, before any network). Per network: parameters,
        gradients, the optimizer's tensors, the checkpoint copies, its shuffle
        order, and one step's activations (kept for backward, and their gradients).
        """
        n_samples = self.n_train + self.n_test
        units = sum(self.widths) + self.n_classes
        data = n_samples * (self.n_features * FLOAT_BYTES + INDEX_BYTES)
        evaluation = 3 * min(EVAL_BATCH, self.n_test) * (self.n_features + units) * FLOAT_BYTES
        weights = self.parameters * FLOAT_BYTES * (2 + self.optimizer_slots + self.n_checkpoints)
        step = self.batch_size * (self.n_features + 4 * units) * FLOAT_BYTES + self.n_train * INDEX_BYTES
        return MemoryEstimate(data + evaluation, weights + step, n_samples * self.n_features * FLOAT_BYTES)


@dataclass(frozen=True)
class MemoryEstimate:
    """A trial's tensor memory in bytes: ``shared`` once per trial, ``per_network`` per packed network."""

    shared: int
    per_network: int
    load_transient: int

    def peak(self, pack: int) -> int:
        """Peak bytes of a trial training ``pack`` networks (tensors only: no process overhead)."""
        return self.shared + max(self.load_transient, pack * self.per_network)
