"""A store on S3: a real S3-compatible server (moto in server mode) on 127.0.0.1, started here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config.grid import expand_grid
from orchestrator.config.sweep_config import parse_config
from orchestrator.report.assemble import refresh_report
from orchestrator.report.publish import is_current
from tests.helpers import BUCKET, s3_uri, tiny_raw_config
from trainables.store import Store, StoreError


def test_store_opens_s3_uris_with_endpoint_and_region_options(s3_endpoint):
    store = Store.open(s3_uri(s3_endpoint, "options", region="eu-west-1"))
    assert (store.fs.type_name, store.fs.region, store.root) == ("s3", "eu-west-1", f"{BUCKET}/options")
    store.write_bytes("trials/x/spec.json", b"{}")
    store.write_bytes("index/trials/_tmp-half.parquet", b"")
    assert store.read_bytes("trials/x/spec.json") == b"{}"
    assert store.list_files("") == ["trials/x/spec.json"]
    assert Store.open(s3_uri(s3_endpoint, "options")).read_bytes("trials/x/spec.json") == b"{}"


def test_a_missing_bucket_is_one_clear_error(s3_endpoint):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' .* does not exist"):
        Store.open(s3_uri(s3_endpoint, "x").replace(BUCKET, "no-such-bucket"))


def test_sweep_ls_report_and_verify_on_s3(s3_endpoint, tmp_path, capsys):
    uri = s3_uri(s3_endpoint, "runs/tiny")
    raw = tiny_raw_config(
        tmp_path / "unused", widths=[[12]], epochs=2, checkpoints=[0, 2], swaps=["reinit"],
        resources={"cpu_per_trial": 1, "gpu_per_trial": 0},
    )
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    # its own Ray, started with the credentials in its environment, as a user would run it
    sweep = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(config_path), "--store", uri, "--no-report"],
        capture_output=True, text=True, timeout=300, env=os.environ,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "2 trained" in sweep.stdout
    store = Store.open(uri)
    expected = {spec.trial_id for spec in expand_grid(parse_config(raw))}
    assert store.completed_trial_ids() == expected
    assert store.read_index("swaps").num_rows == 2 * (2 + 2)  # per trial: none@0,2 and reinit@0 x 2 layers
    assert store.list_files("tune"), "Ray Tune's state is written to the store on S3"
    assert not (tmp_path / "unused").exists(), "the config's own store was not touched"

    assert main(["ls", uri]) == 0
    listing = capsys.readouterr().out
    assert "tiny" in listing and listing.count("\ntiny ") >= 2
    assert all(trial_id in listing for trial_id in expected)

    assert main(["verify", uri]) == 0
    assert f"ok: 2 trials, {2 * (1 + 2)} files verified" in capsys.readouterr().out

    store.write_bytes("report/heatmap-of-an-older-report.png", b"\x89PNG")
    assert main(["report", uri]) == 0
    capsys.readouterr()
    written = store.list_files("report")
    expected_files = {"report/stats.parquet", "report/stats.csv", "report/report.md", "report/report.json"}
    assert expected_files <= set(written)
    assert "report/heatmap-of-an-older-report.png" not in written  # a rebuild leaves no stale figure
    assert is_current(store) and refresh_report(store).written == []
    md = store.read_bytes("report/report.md").decode()
    assert f"Store: s3://{BUCKET}/runs/tiny?endpoint_override=" in md  # the full URI, not a relative path
