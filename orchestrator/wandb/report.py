"""Attaching a sweep's report to a sweep-level W&B run, as an artifact."""

from __future__ import annotations

import sys

import pyarrow.fs as pafs

from trainables.worker.wandb_log import WandbSpec, start_run


def attach_report(settings: WandbSpec, sweep: str, fs: pafs.FileSystem, paths: list[str]) -> bool:
    """Log the report files (read through ``fs``: stats.parquet, report.html, ...) as artifact
    ``<sweep>-report`` of run ``<sweep>-report`` (group ``sweep``), on the driver.

    Returns False, after one warning line, if W&B fails: the sweep's results
    are in the store either way.
    """
    try:
        import wandb

        run = start_run(settings, group=sweep, name=f"{sweep}-report", job_type="report")
        artifact = wandb.Artifact(f"{sweep}-report", type="report")
        for path in paths:
            with fs.open_input_stream(path) as source, artifact.new_file(
                path.rsplit("/", 1)[-1], mode="wb"
            ) as target:
                target.write(source.read())
        run.log_artifact(artifact)
        run.finish()
        wandb.teardown()  # returns once W&B has written the run's files out
    except Exception as err:  # noqa: BLE001 - W&B must never fail a sweep
        print(f"layerswap: W&B report upload failed: {err}", file=sys.stderr)
        return False
    return True
