"""A dataset in memory: compact numpy arrays for Ray's object store, normalised tensors on a device.

Arrays travel through Ray's object store as :class:`DatasetArrays` (uint8 pixels);
:meth:`DatasetArrays.tensors` turns them into pre-normalised float32 tensors on a
trial's device. Loading arrays needs numpy only: the driver reads a dataset (and
expands the grid) before it has imported torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DatasetTensors:
    """A dataset on a trial's device, normalised: ``((raw / pixel_scale) - mean) / std``."""

    x_train: torch.Tensor  # float32 (N, D)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(784,)``."""
        return tuple(self.x_train.shape[1:])


@dataclass(frozen=True)
class DatasetArrays:
    """Raw arrays as they travel through Ray's object store (numpy, compact).

    ``x_*`` are (N, D): uint8 pixels of flattened 28x28 images, or float32 for
    ``synthetic``. Dividing by ``pixel_scale`` gives values in [0, 1] (images);
    ``mean`` and ``std`` then normalise them.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    mean: float
    std: float
    pixel_scale: float

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(784,)``."""
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
        # Copy the compact raw values to the device first, convert there. Out of
        # place throughout: the source may be a read-only object-store buffer.
        import torch

        raw = _as_tensor(x).to(device).to(torch.float32)
        return (raw / self.pixel_scale - self.mean) / self.std


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory; arrays from Ray's object store are read-only."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)
