"""The CIFAR ResNets of He et al. 2016: ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``,
``resnet110`` (depth 6n + 2).

A 3x3 stem, 3 stages of n basic blocks with ``widths`` channels (default 16, 32,
64), the first block of stages 2 and 3 with stride 2 and a 1x1 conv + BN shortcut
(option B), global average pooling and a linear head: the network of
:mod:`trainables.models.resnet` with 3 stages, so with torchvision's state_dict
keys, layers and groups. ResNet-20 at the default widths has 272,474 parameters
(0.27 M, as in the paper).
"""

from __future__ import annotations

from trainables.models.architectures import CIFAR_RESNET_DEPTHS
from trainables.models.resnet import family

FAMILY = family(tuple(CIFAR_RESNET_DEPTHS))
