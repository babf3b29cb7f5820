"""Canonical Arrow schemas of the index tables (DESIGN.md, "The store").

Readers pass these schemas explicitly to ``pyarrow.dataset`` so that every
script (ours, DuckDB, pandas, polars) sees the same column types. Columns may
be added at the end; none may be renamed.
"""

from __future__ import annotations

import pyarrow as pa

TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("widths", pa.list_(pa.int32())),
        ("seed", pa.int64()),
        ("epochs", pa.int32()),
        ("batch_size", pa.int32()),
        ("optimizer", pa.string()),
        ("lr", pa.float64()),
        ("checkpoints", pa.list_(pa.int32())),
        ("spec_json", pa.string()),
        ("test_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("init_test_acc", pa.float64()),
        ("train_seconds", pa.float64()),
        ("device", pa.string()),
        ("node_id", pa.string()),
        ("hostname", pa.string()),
        ("torch_version", pa.string()),
        ("ray_version", pa.string()),
        ("package_version", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # Extensions (DESIGN.md allows added columns):
        ("n_classes", pa.int32()),
        ("swap_seconds", pa.float64()),
        ("resumed_from_epoch", pa.int32()),  # null unless a retried trial resumed training
        # Since store version 2:
        ("config_id", pa.string()),  # hash of the training spec without the seed
        ("pack_size", pa.int32()),  # networks trained together in one trial
        ("accelerator", pa.string()),  # "cpu" or the CUDA device name
        ("train_acc", pa.float64()),  # trained network on the full training set
        ("cuda_version", pa.string()),  # torch's CUDA version on a GPU, null on a CPU
        ("cublas_version", pa.string()),  # the cuBLAS wheel's version on a GPU, null on a CPU or unknown
        ("status", pa.string()),  # "ok", or "diverged" (non-finite training loss); null in older rows = ok
        ("diverged_epoch", pa.int32()),  # the epoch whose training loss was non-finite; null unless diverged
        ("write_seconds", pa.float64()),  # writing the network's other files (weights, spec, index rows)
        # Since v3:
        ("n_params", pa.int64()),  # trainable parameters of the network
        ("factory_source", pa.string()),  # model custom: "<module file> sha256:<its source's sha256>"
    ]
)

WEIGHTS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int32()),
        ("layer", pa.string()),
        ("tensor", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("dtype", pa.string()),
        ("nbytes", pa.int64()),
        ("sha256", pa.string()),
        ("path", pa.string()),
    ]
)

SWAPS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("kind", pa.string()),
        ("layer", pa.string()),
        ("epoch", pa.int32()),
        ("alpha", pa.float64()),
        ("draw", pa.int32()),
        ("test_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("n_test", pa.int64()),
        # Since v3 (null in rows written before, which read as 0):
        ("recalibrate", pa.int32()),  # training samples that re-estimated BatchNorm statistics; 0 = none
    ]
)

LAYERS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int32()),
        ("layer", pa.string()),
        ("n_params", pa.int64()),
        ("norm", pa.float64()),
        ("dist_init", pa.float64()),
        ("rel_dist_init", pa.float64()),
        ("cos_init", pa.float64()),
        ("dist_final", pa.float64()),
        # Since v3 (null in files written before; readers fill them, orchestrator/report/layer_order.py):
        ("layer_index", pa.int32()),  # 0-based position of the layer in the forward pass
        ("module_type", pa.string()),  # "linear", "conv", or a custom model's module class name
    ]
)

CRITICALITY_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("layer", pa.string()),
        ("criticality", pa.float64()),  # NaN when no (alpha, sigma) pair passed
        ("alpha_star", pa.float64()),
        ("sigma_star", pa.float64()),
        ("loss_at_star", pa.float64()),
        ("trained_loss", pa.float64()),
        ("n_alpha", pa.int32()),
        ("n_sigma", pa.int32()),  # grid only (null on bisect rows)
        ("sigma_max", pa.float64()),  # grid only
        ("noise_samples", pa.int32()),
        ("rtol", pa.float64()),
        ("subset_size", pa.int64()),
        ("noise_seed", pa.int64()),
        # Extensions:
        ("sq_dist", pa.float64()),  # ||theta_T - theta_0||^2 of the layer
        ("pairs_evaluated", pa.int32()),  # (alpha, sigma) points evaluated before the answer
        ("seconds", pa.float64()),  # wall time of this layer's search
        # v3 (null in rows written before: grid rows, read as trainables/store/criticality_rows.py says):
        ("search", pa.string()),  # bisect | grid
        ("sigma_lo", pa.float64()),  # the smallest sigma the search could try (absolute)
        ("sigma_hi", pa.float64()),  # the largest
        ("censored", pa.bool_()),  # no alpha passed, or sigma_star at a bound with a score > 0
        ("precision", pa.float64()),  # bisect: sigma_star within a factor 1 + precision; null on grid rows
        ("rel_sigma_lo", pa.float64()),  # bisect: sigma_lo / RMS of the layer's trained parameters
        ("rel_sigma_hi", pa.float64()),  # bisect: sigma_hi / that RMS
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "trials": TRIALS_SCHEMA,
    "weights": WEIGHTS_SCHEMA,
    "swaps": SWAPS_SCHEMA,
    "layers": LAYERS_SCHEMA,
    "criticality": CRITICALITY_SCHEMA,
}
