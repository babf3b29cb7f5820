"""Offline W&B runs in tests: read back from their ``.wandb`` log with W&B's own protobufs, and
what ``wandb sync`` would upload.

wandb >= 0.30 has no Python reader of its own (the writer is wandb-core). The
file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each with a 7-byte header (crc32c, length, type:
1 full, 2 first, 3 middle, 4 last); every record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
WANDB_VARIABLES = ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_TAGS",
                   "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE", "NETRC")
"""What decides where and how W&B logs: a test clears them all and sets what it tests."""


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What a run recorded: its identity, config, history rows, summary and artifacts."""

    folder: Path
    name: str = ""
    group: str = ""
    project: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    """artifact name -> the file paths in its manifest"""


def read_run(folder: Path) -> OfflineRun:
    """The run in ``folder`` (an ``offline-run-*`` directory)."""
    [log] = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for record in read_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.name, run.group, run.project, run.job_type = (
                info.display_name, info.run_group, info.project, info.job_type
            )
            run.config.update({_key(u): json.loads(u.value_json) for u in info.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "artifact":
            run.artifacts[record.artifact.name] = [c.path for c in record.artifact.manifest.contents]
    return run


def offline_runs(wandb_dir: Path) -> list[OfflineRun]:
    """Every offline run under a ``wandb/`` folder as W&B lays it out."""
    return [read_run(folder) for folder in sorted(wandb_dir.glob("offline-run-*"))]


def wandb_sync_dry_run(*paths: str) -> str:
    """What W&B's own `wandb sync` would upload (a dry run needs no server)."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    result = subprocess.run([str(wandb_cli), "sync", "--dry-run", *paths],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr
