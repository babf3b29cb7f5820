"""Evaluating networks on a labelled set: in eval mode, functionally, on tensors nothing writes to.

A network is evaluated as its module with a state_dict put in its place
(``torch.func.functional_call``): the module's own tensors are never used, and
a swap variant (a dict of tensors shared with the stored checkpoints) is
never copied. Every evaluation runs the module in eval mode (a BatchNorm uses
its running statistics and updates nothing) under ``torch.no_grad``, whatever
mode the module was in before; it is left in that mode afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from trainables.models.family import Evaluation, ModelFamily, StateDict
from trainables.plan import EVAL_BATCH


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every submodule's own mode is restored after it."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@torch.no_grad()
def evaluate(
    model: nn.Module, params: StateDict, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH
) -> Evaluation:
    """Run all of ``x`` through ``model`` with ``params`` in place of its own tensors, in eval mode."""
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    with eval_mode(model):
        for start in range(0, x.shape[0], batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            logits = functional_call(model, params, (xb,))
            correct += (logits.argmax(dim=1) == yb).sum()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
    n = x.shape[0]
    return Evaluation(int(correct) / n, float(loss_sum) / n, n)


def evaluate_each(
    model: nn.Module, variants: Sequence[StateDict], x: torch.Tensor, y: torch.Tensor, batch: int
) -> list[Evaluation]:
    """The generic way to evaluate many variants: :func:`evaluate` of each, one at a time."""
    return [evaluate(model, params, x, y, batch) for params in variants]


def evaluate_many(
    family: ModelFamily, model: nn.Module, variants: Sequence[StateDict], x: torch.Tensor, y: torch.Tensor
) -> list[Evaluation]:
    """Every variant's evaluation, in order: the family's fast evaluator if it has one, else
    :func:`evaluate_each`; :data:`EVAL_BATCH` samples at a time."""
    evaluator = family.evaluate_variants or evaluate_each
    return evaluator(model, variants, x, y, EVAL_BATCH)
