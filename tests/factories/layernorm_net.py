"""Factories of ``model: custom`` networks for tests/test_custom_model.py (imported from this folder,
``factory: "layernorm_net:build"``, so that Ray workers can import it only through ``py_modules``)."""

from __future__ import annotations

import torch
from torch import nn


class LayerNormNet(nn.Module):
    """3x3 conv of ``width`` channels + ReLU, 2x2 average pool, ``fc1`` + LayerNorm + ReLU, ``head``."""

    def __init__(self, channels: int, width: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(width * 4, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.norm(self.fc1(h))))


def build(input_shape: tuple[int, ...], n_classes: int, widths: tuple[int, ...],
          hidden: int = 16) -> nn.Module:
    return LayerNormNet(input_shape[0], widths[0] if widths else 6, hidden, n_classes)


def not_a_module(input_shape: tuple[int, ...], n_classes: int, widths: tuple[int, ...]) -> dict:
    return {"conv": nn.Conv2d(input_shape[0], 4, 3)}


def tied(input_shape: tuple[int, ...], n_classes: int, widths: tuple[int, ...]) -> nn.Module:
    """An encoder and a decoder sharing one Linear: one module under two names."""
    shared = nn.Linear(n_classes, n_classes)
    features = input_shape[0] * input_shape[1] * input_shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(features, n_classes), shared, nn.ReLU(), shared)


def wrong_logits(input_shape: tuple[int, ...], n_classes: int, widths: tuple[int, ...]) -> nn.Module:
    features = input_shape[0] * input_shape[1] * input_shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(features, n_classes + 1))
