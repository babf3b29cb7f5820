"""The MLP's fast measurement paths: many swap variants through one tree, K noise samples in one matmul.

**Variant tree** (:func:`evaluate_variant_tree`). Swap variants that share
their first layers (the same tensor objects, as ``trainables.measure.swaps``
builds them) share those layers' activations, computed once per test batch.
Every reinit, rerandomize and interpolate (all alphas) of layer k starts from
the trained network's activations before layer k, every transplant from the
initial network's. The arithmetic per variant is exactly that of evaluating
the variant alone with ``functional_call``, so the results are the same.
(Stacking sibling layers into one wider matmul was measured too: the same
FLOPs in already large products, no gain on a CPU.)

**Noise samples** (:class:`MLPNoiseLoss`). The K perturbed copies of one layer
are one stacked (K, out, in) tensor applied with ``torch.baddbmm`` to the
activations before the layer (computed once per layer with the trained
network), and the later layers run on the (K, batch, features) result.

Both work on the MLP's tensors directly (no module runs), so no module state
is read or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from trainables.models.family import Evaluation, Layer, StateDict


@dataclass
class LayerNode:
    """One layer's (weight, bias) applied to its parent's output in a tree of variants.

    ``children`` are keyed by the identity of the next layer's tensors;
    ``variants`` lists the indices of the variants whose last layer this is.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    children: dict[tuple[int, int], LayerNode] = field(default_factory=dict)
    variants: list[int] = field(default_factory=list)


def variant_tree(
    layer_names: Sequence[str], variants: Sequence[StateDict]
) -> dict[tuple[int, int], LayerNode]:
    """Variants as paths of layers, merged where they share the same leading tensors."""
    roots: dict[tuple[int, int], LayerNode] = {}
    for index, params in enumerate(variants):
        level = roots
        for name in layer_names:
            weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
            node = level.setdefault((id(weight), id(bias)), LayerNode(weight, bias))
            level = node.children
        node.variants.append(index)
    return roots


@torch.no_grad()
def evaluate_variant_tree(
    model: nn.Module, variants: Sequence[StateDict], x: torch.Tensor, y: torch.Tensor, batch: int
) -> list[Evaluation]:
    """Every variant's evaluation, in order, the test set in batches of ``batch`` through the tree."""
    roots = variant_tree(model.layer_names, variants)
    correct = [torch.zeros((), dtype=torch.int64, device=x.device) for _ in variants]
    loss_sum = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in variants]

    def visit(level: dict[tuple[int, int], LayerNode], h: torch.Tensor, yb: torch.Tensor) -> None:
        for node in level.values():
            out = F.linear(h, node.weight, node.bias)
            if node.children:
                visit(node.children, torch.relu(out), yb)
                continue
            hits = (out.argmax(dim=1) == yb).sum()
            loss = F.cross_entropy(out, yb, reduction="sum").double()
            for index in node.variants:
                correct[index] += hits
                loss_sum[index] += loss

    for start in range(0, x.shape[0], batch):
        visit(roots, x[start : start + batch].flatten(1), y[start : start + batch])
    n = x.shape[0]
    hits = torch.stack(correct).tolist()
    losses = torch.stack(loss_sum).tolist()
    return [Evaluation(c / n, loss / n, n) for c, loss in zip(hits, losses, strict=True)]


class MLPNoiseLoss:
    """A trained MLP's layers as (weight, bias) pairs, with the loss of K stacked copies of one layer."""

    def __init__(
        self, model: nn.Module, trained: StateDict, x: torch.Tensor, y: torch.Tensor, batch: int
    ) -> None:
        self.names: tuple[str, ...] = model.layer_names
        self.params = [(trained[f"{name}.weight"], trained[f"{name}.bias"]) for name in self.names]
        self.x, self.y, self.batch = x.flatten(1), y, batch
        self._inputs: tuple[int, torch.Tensor] | None = None

    def inputs_of(self, index: int) -> torch.Tensor:
        """The activations entering layer ``index`` (trained layers before it), whole subset."""
        h = self.x
        for weight, bias in self.params[:index]:
            h = torch.relu(F.linear(h, weight, bias))
        return h

    def mean_loss(self, index: int, h_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """Mean over the K stacked copies (``weight`` (K, out, in), ``bias`` (K, out)) of layer
        ``index`` of the mean cross-entropy over the subset, from the layer's inputs ``h_in``."""
        k = weight.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=h_in.device)
        transposed = weight.transpose(1, 2)
        for start in range(0, h_in.shape[0], self.batch):
            hb = h_in[start : start + self.batch]
            yb = self.y[start : start + self.batch]
            out = torch.baddbmm(bias.unsqueeze(1), hb.expand(k, *hb.shape), transposed)
            for later_weight, later_bias in self.params[index + 1 :]:
                out = F.linear(torch.relu(out), later_weight, later_bias)
            logits = out.reshape(-1, out.shape[-1])
            total += F.cross_entropy(logits, yb.repeat(k), reduction="sum").double()
        return float(total) / (k * h_in.shape[0])

    @torch.no_grad()
    def __call__(self, layer: Layer, copies: StateDict, fixed: StateDict) -> float:
        """:meth:`mean_loss` of ``layer``'s copies; the inputs of the last layer asked for are kept."""
        if self._inputs is None or self._inputs[0] != layer.index:
            self._inputs = (layer.index, self.inputs_of(layer.index))
        weight, bias = copies[f"{layer.name}.weight"], copies[f"{layer.name}.bias"]
        return self.mean_loss(layer.index, self._inputs[1], weight, bias)
