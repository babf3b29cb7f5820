"""Canonical Arrow schemas of the three index tables (DESIGN.md, "The store").

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
        ("cuda_version", pa.string()),  # torch's CUDA version on a GPU, null on a CPU
        ("cublas_version", pa.string()),  # the cuBLAS wheel's version on a GPU, null on a CPU or unknown
        # Since store version 2:
        ("config_id", pa.string()),  # hash of the training spec without the seed
        ("pack_size", pa.int32()),  # networks trained together in one trial
        ("accelerator", pa.string()),  # "cpu" or the CUDA device name
        ("train_acc", pa.float64()),  # trained network on the full training set
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
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "trials": TRIALS_SCHEMA,
    "weights": WEIGHTS_SCHEMA,
    "swaps": SWAPS_SCHEMA,
}
