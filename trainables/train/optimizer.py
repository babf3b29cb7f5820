"""The optimizers trials train with: SGD and Adam, stepping through ``torch.optim``'s functional updates.

Why not ``torch.optim.SGD`` itself: every ``torch.optim.Optimizer`` imports
``torch._dynamo`` the first time it is built or stepped (``add_param_group``,
``zero_grad`` and ``step`` are wrapped to keep dynamo out of them), which costs a
fresh trial worker 1.8 s on a 2-core machine, longer than a small trial trains.
The classes here call the same functions ``torch.optim.SGD.step`` and
``torch.optim.Adam.step`` call (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``)
with the same arguments and the same lazily created state, so the weights they
train are torch.optim's bit for bit (tests/test_optimizer.py), and their
``state_dict`` has torch.optim's format, so a resumable state saved by either
loads into the other.

One parameter group; ``lr`` is the current learning rate, which a
:class:`~trainables.train.recipe.LearningRateSchedule` sets between steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from trainables.spec import OptimizerSpec

OptimizerState = dict[str, Any]
"""``torch.optim.Optimizer.state_dict()``'s format: ``{"state": {index: {name: tensor}},
"param_groups": [{hyperparameters..., "params": [0, 1, ...]}]}``."""


class Optimizer:
    """Shared by :class:`SGD` and :class:`Adam`: parameters, per-parameter state, the state dict."""

    def __init__(self, params: list[torch.Tensor], lr: float, hyperparameters: dict[str, Any]) -> None:
        if not params:
            raise ValueError("optimizer: no parameters to optimize")
        self.params = list(params)
        self.lr = lr
        self.hyperparameters = hyperparameters
        """torch.optim's param_group entries other than ``lr`` and ``params``."""
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients (torch.optim's default, ``set_to_none=True``)."""
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        with torch.no_grad():
            self._update([i for i, param in enumerate(self.params) if param.grad is not None])

    def _update(self, indices: list[int]) -> None:
        raise NotImplementedError

    def state_dict(self) -> OptimizerState:
        """torch.optim's format; the state tensors are the live ones (as torch.optim's are)."""
        group = {"lr": self.lr, **self.hyperparameters, "params": list(range(len(self.params)))}
        return {"state": {i: dict(state) for i, state in enumerate(self.state) if state},
                "param_groups": [group]}

    def load_state_dict(self, saved: OptimizerState) -> None:
        """Continue from ``saved`` (this class's or torch.optim's state dict over the same parameters):
        its learning rate and state, copied onto each parameter's device (and dtype, but for Adam's
        ``step`` counts, which keep theirs)."""
        [group] = saved["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"optimizer state: {len(group['params'])} parameters saved, "
                             f"{len(self.params)} to optimize")
        self.lr = group["lr"]
        self.state = [{} for _ in self.params]
        for index, state in saved["state"].items():  # one group: its parameters are numbered 0, 1, ...
            i = int(index)
            param = self.params[i]
            self.state[i] = {
                name: self._loaded(name, value, param).clone() for name, value in state.items()
            }

    def _loaded(self, name: str, value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        return value.to(device=param.device, dtype=param.dtype)


class SGD(Optimizer):
    """``torch.optim.SGD`` (dampening 0, not maximizing, foreach and fused left to torch's default)."""

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if nesterov and momentum <= 0:
            raise ValueError("optimizer: Nesterov momentum requires a momentum above 0")
        super().__init__(params, lr, {
            "momentum": momentum, "dampening": 0, "weight_decay": weight_decay, "nesterov": nesterov,
            "maximize": False, "foreach": None, "differentiable": False, "fused": None,
        })

    def _update(self, indices: list[int]) -> None:
        h = self.hyperparameters
        momentum = h["momentum"] != 0
        buffers = [self.state[i].get("momentum_buffer") for i in indices] if momentum else []
        sgd([self.params[i] for i in indices], [self.params[i].grad for i in indices], buffers,
            weight_decay=h["weight_decay"], momentum=h["momentum"], lr=self.lr, dampening=h["dampening"],
            nesterov=h["nesterov"], maximize=False, has_sparse_grad=False, foreach=None, fused=None)
        if momentum:
            for i, buffer in zip(indices, buffers, strict=True):
                self.state[i]["momentum_buffer"] = buffer


class Adam(Optimizer):
    """``torch.optim.Adam`` (betas 0.9 and 0.999, eps 1e-8, no amsgrad). ``capturable``: keep the step
    counts on the parameters' device, as a CUDA graph of the step needs."""

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 capturable: bool = False) -> None:
        super().__init__(params, lr, {
            "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay, "amsgrad": False,
            "maximize": False, "foreach": None, "capturable": capturable, "differentiable": False,
            "fused": None, "decoupled_weight_decay": False,
        })

    def _update(self, indices: list[int]) -> None:
        h = self.hyperparameters
        for i in indices:
            if not self.state[i]:
                param = self.params[i]
                step_device = param.device if h["capturable"] else torch.device("cpu")
                self.state[i] = {
                    "step": torch.zeros((), dtype=_step_dtype(), device=step_device),
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }
        states = [self.state[i] for i in indices]
        beta1, beta2 = h["betas"]
        adam([self.params[i] for i in indices], [self.params[i].grad for i in indices],
             [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             [s["step"] for s in states], foreach=None, capturable=h["capturable"], differentiable=False,
             fused=None, has_complex=any(torch.is_complex(self.params[i]) for i in indices),
             decoupled_weight_decay=False, amsgrad=False, beta1=beta1, beta2=beta2, lr=self.lr,
             weight_decay=h["weight_decay"], eps=h["eps"], maximize=False)

    def _loaded(self, name: str, value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        if name == "step":
            return value.to(param.device) if self.hyperparameters["capturable"] else value
        return super()._loaded(name, value, param)


def _step_dtype() -> torch.dtype:
    """torch.optim's dtype for Adam's step count: float64 where that is the default dtype."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def make_optimizer(spec: OptimizerSpec, params: list[torch.Tensor]) -> Optimizer:
    """The optimizer of ``spec`` over ``params``.

    Adam on a CUDA device keeps its step count on the device (``capturable``), as
    a CUDA graph of the step needs; it does so with graphs off too, so a GPU
    trains the same weights either way.
    """
    if spec.name == "sgd":
        return SGD(params, spec.lr, spec.momentum, spec.weight_decay, spec.nesterov)
    if spec.name == "adam":
        return Adam(params, spec.lr, spec.weight_decay, capturable=params[0].is_cuda)
    raise ValueError(f"optimizer.name: {spec.name!r} is not known; allowed: sgd, adam")
