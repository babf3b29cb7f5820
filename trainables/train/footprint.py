"""A network's footprint measured on the meta device: FLOPs, what autograd keeps, layer outputs, peak.

The network is built on the meta device (shapes only: no memory, no init,
milliseconds) and run once at the trial's batch size: FLOPs by
``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward,
the tensors autograd keeps for backward by
``torch.autograd.graph.saved_tensors_hooks``, every layer's output by forward
hooks, and the peak of the tensors alive during one forward pass in eval mode
without gradients (:class:`LiveBytes`). The driver asks through
:func:`trainables.train.pack_shape.measure_network`, which prefers a family's formula.
"""

from __future__ import annotations

import weakref

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from trainables.models import registry
from trainables.models.architectures import NO_OPTIONS, BuildOptions
from trainables.train.pack_shape import NetworkFootprint


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


