"""What a sweep config may choose from, in a module that imports nothing heavy.

The CLI validates a config against these names without importing torch, Ray
or pyarrow, so ``layerswap --help`` and a refused config answer at once.
"""

from __future__ import annotations

from trainables.data.catalog import DATASETS as DATASETS  # re-exported: the config validates against it
from trainables.models.registry import MODELS as MODELS  # re-exported: the config validates against it

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
"""fp32: exact float32; tf32: TensorFloat-32 CUDA matmuls in forward, backward and the optimizer
step (fp32 on a CPU); bf16: bfloat16 autocast of the forward pass (weights and optimizer stay
float32). Evaluation is always float32."""
WANDB_MODES: tuple[str, ...] = ("online", "offline", "disabled")
AUGMENTS: tuple[str, ...] = ("none", "flip-crop")
"""flip-crop: random horizontal flip and random crop with 4-pixel zero padding, per sample (images only)."""
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine")
