"""A dataset in memory: compact numpy arrays for Ray's object store, normalised tensors on a device.

Arrays travel through Ray's object store as :class:`DatasetArrays` (uint8 pixels);
:meth:`DatasetArrays.tensors` turns them into pre-normalised float32 tensors on a
trial's device. Loading arrays needs numpy only: the driver reads a dataset (and
expands the grid) before it has imported torch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DatasetTensors:
    """A dataset on a trial's device, normalised: ``((raw / pixel_scale) - mean) / std``."""

    x_train: torch.Tensor  # float32 (N, *input_shape): (N, C, H, W) for images
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class DatasetArrays:
    """Raw arrays as they travel through Ray's object store (numpy, compact).

    ``x_*`` are (N, *input_shape): uint8 pixels of images kept as (N, C, H, W)
    (a model that wants vectors flattens them), or float32 for the synthetic
    datasets. Dividing by ``pixel_scale`` gives values in [0, 1] (images);
    ``mean`` and ``std`` then normalise them: numbers, or one number per channel
    (dimension 1).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    pixel_scale: float

    @property
    def n_features(self) -> int:
        """Values per sample (784 for a 1x28x28 image)."""
        return math.prod(self.input_shape)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(int(n) for n in self.x_train.shape[1:])

    def tensors(self, device: torch.device | str) -> DatasetTensors:
        """Pre-normalised float32 features and int64 labels on ``device``."""
        import torch  # here, not above: the driver loads datasets before it needs torch

        return DatasetTensors(
            x_train=self._features(self.x_train, device),
            y_train=_as_tensor(self.y_train).to(device, torch.int64),
            x_test=self._features(self.x_test, device),
            y_test=_as_tensor(self.y_test).to(device, torch.int64),
            n_classes=self.n_classes,
        )

    def _features(self, x: np.ndarray, device: torch.device | str) -> torch.Tensor:
        # Copy the compact raw values to the device first, convert there into a new
        # tensor (the source may be a read-only object-store buffer), then normalise
        # that in place: the same operations in the same order as
        # ``(raw / pixel_scale - mean) / std``, without three more full-size copies.
        import torch

        values = _as_tensor(x).to(device).to(torch.float32, copy=True)
        return values.div_(self.pixel_scale).sub_(_per_channel(self.mean, values)).div_(
            _per_channel(self.std, values)
        )


def _per_channel(value: float | tuple[float, ...], x: torch.Tensor) -> float | torch.Tensor:
    """A number as it is; one number per channel as a tensor that broadcasts over (N, C, ...)."""
    if isinstance(value, int | float):
        return value
    import torch

    return torch.tensor(value, dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.dim() - 2)))


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; arrays from Ray's object store are read-only."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)
