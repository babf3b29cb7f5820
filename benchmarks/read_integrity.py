"""What checking weights against index/weights costs ``layerswap analyze``: the demo store measured
with the check and without it, in one run.

The demo sweep (``configs/demo.yaml``) is trained into a scratch store, in this process. Then, per
network, what one ``analyze`` task does is timed twice, alternately: :func:`measure_stored` (read
the checkpoints the keys need, check them, measure, write one batch file) as shipped, and the same
with the loader swapped for one that only reads the files (no sha256, no comparison). The keys are
every swap of the demo's plan except the baselines (what ``analyze`` adds when the plan grows:
reinit, rerandomize, transplant, interpolate). Batch files are deleted between runs.

    python -m benchmarks.read_integrity [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

import trainables.measure.stored as stored
from benchmarks.common import DEMO_CONFIG, busy_warning, parse_mode, publish, table
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import load_config
from trainables.data.datasets import load_dataset
from trainables.measure.checked_weights import indexed_rows, read_checked
from trainables.measure.row_keys import Missing
from trainables.measure.stored import measure_stored, wanted
from trainables.store import Store, layout
from trainables.worker.pack_job import Placement, run_networks

CPU = torch.device("cpu")
CHECKED = stored.load_checked
"""The loader as shipped (reads, hashes and compares)."""


def unchecked(store: Store, spec, device: torch.device, epochs=None) -> dict:
    """The loader without the check: the files read and parsed, nothing hashed or compared."""
    wanted = spec.checkpoints if epochs is None else sorted(set(epochs))
    return {
        epoch: {key: value.to(device) for key, value in safetensors.torch.load(
            store.read_bytes(layout.weights_path(spec.trial_id, epoch))).items()}
        for epoch in wanted
    }


def timed_measure(store: Store, spec, missing: Missing, data, check: bool) -> float:
    """Seconds of one measure_stored (its batch file deleted afterwards), with or without the check."""
    stored.load_checked = CHECKED if check else unchecked
    started = time.perf_counter()
    rows = measure_stored(store, spec, missing, data, CPU)
    seconds = time.perf_counter() - started
    assert rows == len(missing.keys)
    for relpath in store.list_files("index/swaps"):
        if relpath.startswith(f"index/swaps/{spec.trial_id}-"):
            store.delete(relpath)
    return seconds


def hash_seconds(store: Store, spec, epochs: tuple[int, ...]) -> float:
    """Seconds to read, parse and check (hash) the checkpoints ``epochs`` of one network."""
    started = time.perf_counter()
    rows = indexed_rows(store, spec.trial_id)
    for epoch in epochs:
        read_checked(store, spec.trial_id, epoch, rows[epoch])
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    mode = parse_mode(__doc__.splitlines()[0], argv)
    warning = busy_warning()
    demo = load_config(DEMO_CONFIG)
    repeats = mode.pick(1, 3)
    with tempfile.TemporaryDirectory(prefix="layerswap-bench-") as scratch:
        config = demo.with_overrides(store=str(Path(scratch) / "demo"), seeds=mode.pick(2, None),
                                     epochs=mode.pick(1, None))
        store = Store.open(config.store)
        store.require_writable_version("sweep")
        arrays = load_dataset(config.dataset)
        data = arrays.tensors(CPU)
        started = time.perf_counter()
        specs = expand_grid(config)
        for spec in specs:
            run_networks([spec], config.plan, data, store, config.name, Placement.here(CPU))
        trained = time.perf_counter() - started
        rows: list[dict[str, Any]] = []
        for spec in specs:
            keys = tuple(key for key in wanted(spec, config.plan, data.input_shape, data.n_classes).keys
                         if key[0] != "none")
            missing = Missing(keys)
            with_check, without = [], []
            for _ in range(repeats):  # alternated, so that a change of load hits both alike
                with_check.append(timed_measure(store, spec, missing, data, check=True))
                without.append(timed_measure(store, spec, missing, data, check=False))
            epochs = stored.checkpoints_needed(spec, missing)
            rows.append({
                "trial_id": spec.trial_id, "widths": "-".join(map(str, spec.widths)), "keys": len(keys),
                "checkpoints_read": len(epochs),
                "mb_read": sum((Path(config.store) / layout.weights_path(spec.trial_id, e)).stat().st_size
                               for e in epochs) / 1e6,
                "with_check_s": statistics.median(with_check), "without_check_s": statistics.median(without),
                "read_and_hash_s": statistics.median(
                    hash_seconds(store, spec, epochs) for _ in range(repeats)
                ),
            })
        stored.load_checked = CHECKED
    total_with = sum(r["with_check_s"] for r in rows)
    total_without = sum(r["without_check_s"] for r in rows)
    text = table(
        ["network", "widths", "keys", "checkpoints", "MB read", "with check s", "without s", "read+hash s"],
        [[r["trial_id"][:8], r["widths"], r["keys"], r["checkpoints_read"], r["mb_read"], r["with_check_s"],
          r["without_check_s"], r["read_and_hash_s"]] for r in rows],
    )
    cost = total_with / total_without - 1
    text += (
        f"\n{len(rows)} networks ({config.epochs} epochs, trained here in {trained:.0f} s): measuring with "
        f"the check {total_with:.2f} s, without {total_without:.2f} s: the check costs {100 * cost:+.1f}% "
        f"(median of {repeats} alternated run(s) per network)"
    )
    payload = {"config": "configs/demo.yaml", "epochs": config.epochs, "repeats": repeats, "rows": rows,
               "with_check_seconds": total_with, "without_check_seconds": total_without,
               "cost_fraction": cost}
    publish("read_integrity", "read_integrity: checking weights on read", mode, text, payload, warning)


if __name__ == "__main__":
    main()
