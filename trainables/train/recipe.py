"""Training recipes: flip-crop augmentation on the device, and learning-rate schedules.

**Augmentation** (``augment: flip-crop``): each training sample of each epoch is
cropped from the image zero-padded by :data:`PAD` pixels on every side, at an
offset (dy, dx) in [0, 2 * PAD], then flipped horizontally with probability 1/2.
The draws are made once per epoch, for every position of the epoch's shuffled
order, from the network's own generator on the trial's device, seeded with
``derive_seed("augment", seed)`` (:func:`augment_generator`); its state is saved
with the resumable training state. A step then receives its batch as a (4, B)
tensor: the sample indices and the three draws of each (:func:`with_draws`), so
nothing random happens inside a step (a CUDA graph replays it as it is).

**Schedules** (``schedule``): a :class:`LearningRateSchedule` (``torch.optim``'s
``LambdaLR``, without its optimizer class) stepped after every optimizer step,
whose factor of ``optimizer.lr`` is the closed form
of MultiStepLR (``step``: times ``gamma`` from each milestone epoch on) or of
CosineAnnealingLR with eta_min 0 (``cosine``: ``(1 + cos(pi t / T)) / 2`` over the
T steps after the warmup), after an optional linear warmup (the first
``warmup_epochs`` epochs, the k-th step at ``k / warmup steps`` of the rate).
One schedule holds all of it, so its state (the step count) is all a resume needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from trainables.seeding import derive_seed
from trainables.spec import ScheduleSpec, TrialSpec
from trainables.train.optimizer import Optimizer

PAD = 4
"""Zero padding of the random crop, pixels on each side."""


def augment_generator(spec: TrialSpec, device: torch.device) -> torch.Generator | None:
    """The network's augmentation generator on ``device`` (None without augmentation)."""
    if spec.augment == "none":
        return None
    return torch.Generator(device=device).manual_seed(derive_seed("augment", spec.seed))


def epoch_draws(generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    """One epoch's draws (3, n) int64 on ``device``: flip (0 or 1), dy and dx (0 .. 2 * PAD)."""
    flips = torch.randint(0, 2, (1, n), generator=generator, device=device)
    offsets = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator, device=device)
    return torch.cat([flips, offsets])


def with_draws(order: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
    """The epoch's order (n,) with its draws below it (4, n); the order itself without augmentation."""
    return order if draws is None else torch.cat([order.unsqueeze(0), draws])


def flip_crop(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Images ``x`` (B, C, H, W) cropped at (dy, dx) from their zero-padded selves and flipped where
    ``flip`` is 1; ``draws`` (3, B) is (flip, dy, dx) per image."""
    b, c, h, w = x.shape
    flip, dy, dx = draws
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    rows = dy.unsqueeze(1) + torch.arange(h, device=x.device)
    cols = dx.unsqueeze(1) + torch.arange(w, device=x.device)
    cols = torch.where(flip.unsqueeze(1).bool(), cols.flip(1), cols)
    picked = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * PAD))
    return picked.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def lr_factor(schedule: ScheduleSpec, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The factor of the base learning rate at optimizer step ``step`` (0-based) of ``schedule``."""
    warmup = schedule.warmup_epochs * steps_per_epoch
    total = epochs * steps_per_epoch
    milestones = [epoch * steps_per_epoch for epoch in schedule.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.name == "step":
            return float(schedule.gamma or 1.0) ** sum(step >= milestone for milestone in milestones)
        if schedule.name == "cosine":
            return (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(1, total - warmup))) / 2
        return 1.0

    return factor


class LearningRateSchedule:
    """Sets ``optimizer.lr`` to its base rate times ``factor(step)`` before optimizer step ``step``
    (0-based): ``LambdaLR``'s arithmetic. ``step()`` after every optimizer step."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.factor = factor
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        """Optimizer steps taken (LambdaLR's name for it)."""
        optimizer.lr = self.base_lr * factor(0)

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.base_lr * self.factor(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The step count and the rate it set (``LambdaLR.state_dict()``'s names for them)."""
        return {"last_epoch": self.last_epoch, "_last_lr": [self.optimizer.lr]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from ``saved`` (this class's or a LambdaLR's state dict); the optimizer's own state
        holds the rate of its next step."""
        self.last_epoch = int(saved["last_epoch"])


def make_scheduler(
    spec: TrialSpec, optimizer: Optimizer, steps_per_epoch: int
) -> LearningRateSchedule | None:
    """The learning-rate schedule of ``spec`` (None for a constant rate without warmup)."""
    if spec.schedule == ScheduleSpec():
        return None
    return LearningRateSchedule(optimizer, lr_factor(spec.schedule, steps_per_epoch, spec.epochs))


def graphs_allowed(spec: TrialSpec) -> bool:
    """Whether CUDA graphs may replay ``spec``'s steps: not with a schedule (a captured optimizer step
    keeps the learning rate it was captured with), so a scheduled trial trains eagerly."""
    return spec.schedule == ScheduleSpec()
