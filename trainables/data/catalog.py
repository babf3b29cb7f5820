"""What each dataset is, without loading it or importing anything heavy: its sample shape, its
classes and its normalisation.

The config is validated against this table before torch is imported: a model that needs images,
or widths that pool an image below one pixel, are refused from the dataset's ``input_shape``
alone. ``mean``/``std`` are applied after scaling raw values to [0, 1] and recorded in every
spec (``data_mean``/``data_std``): a number for one-channel data, one number per channel
otherwise (DESIGN.md, "Identity").
"""

from __future__ import annotations

from dataclasses import dataclass

Normalization = float | tuple[float, ...]
"""A number for one-channel data, else one number per channel."""


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: ``input_shape`` of one sample ((C, H, W) for images), ``n_classes``, and the
    ``mean``/``std`` that normalise its values scaled to [0, 1]."""

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    mean: Normalization
    std: Normalization

    @property
    def is_image(self) -> bool:
        """Whether a sample is an image (C, H, W)."""
        return len(self.input_shape) == 3


CATALOG: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", (1, 28, 28), 10, 0.1307, 0.3081),
        DatasetInfo("fashion-mnist", (1, 28, 28), 10, 0.2860, 0.3530),
        # Per-channel statistics of the training images, as published (CIFAR-100: the values of
        # weiaicunzai/pytorch-cifar100 and most CIFAR-100 training code, rounded to 4 digits).
        DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        # Generated already standardised (trainables/data/synthetic.py).
        DatasetInfo("synthetic", (20,), 4, 0.0, 1.0),
        DatasetInfo("synthetic-images", (3, 8, 8), 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    )
}

DATASETS: tuple[str, ...] = tuple(CATALOG)

