"""Per-layer weight movement: how far each layer is from its initial and its trained weights.

One row per (stored checkpoint, layer) in ``index/layers/<trial_id>.parquet``
(DESIGN.md, "Measurements"). A layer's trainable parameters (weight and bias
together; running statistics are not parameters) are flattened into one vector
theta; norms are Frobenius (L2) norms computed in float64:

- ``norm``          ||theta_t||
- ``dist_init``     ||theta_t - theta_0||
- ``rel_dist_init`` dist_init / ||theta_0||   (0.31 = moved 31% of its initial norm)
- ``cos_init``      <theta_t, theta_0> / (||theta_t|| ||theta_0||)
- ``dist_final``    ||theta_t - theta_T||, T the last epoch

and the layer's ``layer_index`` (0-based position in the forward pass) and
``module_type`` (``linear``, ``conv`` or the module's class name). A group of layers
(:mod:`trainables.models.units`) is one vector of all its layers' parameters; its rows have
``module_type`` ``block`` or ``stage`` and no ``layer_index`` (a group has no one position).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainables.models.family import Layer, StateDict


def layer_vector(state: StateDict, tensors: tuple[str, ...]) -> torch.Tensor:
    """A layer's tensors flattened and concatenated, in float64."""
    return torch.cat([state[key].detach().reshape(-1).double() for key in tensors])


def movement_rows(
    trial_id: str, checkpoints: dict[int, StateDict], layers: Sequence[Layer]
) -> list[dict]:
    """The ``layers`` rows of one network: every checkpoint of ``checkpoints`` x every layer."""
    epochs = sorted(checkpoints)
    rows = []
    for layer in layers:
        tensors = layer.parameters
        initial = layer_vector(checkpoints[epochs[0]], tensors)
        final = layer_vector(checkpoints[epochs[-1]], tensors)
        initial_norm = float(initial.norm())
        for epoch in epochs:
            theta = initial if epoch == epochs[0] else layer_vector(checkpoints[epoch], tensors)
            norm = float(theta.norm())
            dist_init = float((theta - initial).norm())
            rows.append(
                {
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "layer": layer.name,
                    "n_params": theta.numel(),
                    "norm": norm,
                    "dist_init": dist_init,
                    "rel_dist_init": dist_init / initial_norm if initial_norm else float("nan"),
                    "cos_init": float(theta @ initial) / (norm * initial_norm)
                    if norm * initial_norm
                    else float("nan"),
                    "dist_final": float((theta - final).norm()),
                    "layer_index": layer.index if layer.level == "layer" else None,
                    "module_type": layer.module_type,
                }
            )
    return rows
