"""Bad input refused in one line through the real CLI: a directory that is no store, config files too
large, endless or empty; and a batch_size larger than the training set, which is allowed."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from tests.helpers import tiny_raw_config
from trainables.store import Store, layout


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerswap: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["sweep", "analyze"])
def test_a_directory_that_holds_no_store_is_refused(tmp_path, capsys, command):
    foreign = tmp_path / "etc"
    foreign.mkdir()
    (foreign / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (foreign / "hosts").write_text("127.0.0.1 localhost\n")
    (foreign / "ssh").mkdir()
    before = snapshot(foreign)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(tmp_path / "unused")))
    argv = ["sweep", str(config), "--store", str(foreign)] if command == "sweep" else [command, str(foreign)]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert one_line(err) == (
        f"layerswap: error: store: '{foreign}' is a directory that is not empty (hosts, passwd, ssh) and "
        "holds no layerswap store (no layerswap.json); a new store needs an empty or new directory"
    )
    assert snapshot(foreign) == before  # not even a probe was written


def test_empty_directories_and_version_1_stores_are_still_stores(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".snapshot").mkdir()  # hidden entries (NFS snapshots, a crashed probe's leftovers) are ignored
    (empty / "_probe-0123.tmp").write_text("")
    assert Store.open(str(empty)).version() is None
    assert Store.open(str(tmp_path / "absent")).version() is None
    old = tmp_path / "v1"
    (old / "index" / "trials").mkdir(parents=True)  # written before layerswap.json existed
    assert Store.open(str(old)).version() == 1
    assert not (old / layout.STORE_MARKER).exists()


CONFIGS = [
    ("larger than 1 MiB", lambda path: path.write_text("name: big\n" + "# padding\n" * 200_000),
     "is larger than 1 MiB; a sweep config is a few hundred bytes of YAML (is it the right file?)"),
    ("endless stream", None, "is larger than 1 MiB"),
    ("empty file", lambda path: path.write_text(""), "is empty; write the sweep's fields in it"),
    ("only comments", lambda path: path.write_text("# a config\n\n   \n# nothing yet\n"),
     "is empty (only comments or blank lines); write the sweep's fields in it"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_config_size_and_emptiness_are_checked_before_parsing(tmp_path, capsys, make, expected):
    path = Path("/dev/zero") if make is None else tmp_path / "config.yaml"
    if make is not None:
        make(path)
    started = time.monotonic()
    code, out, err = run(capsys, "sweep", str(path))
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith(f"layerswap: error: config: '{path}' ") and expected in line, line
    assert time.monotonic() - started < 5  # read at most 1 MiB, never parsed


def test_a_batch_larger_than_the_training_set_is_one_batch_per_epoch(local_ray, tmp_path, capsys):
    """The synthetic training set has 1,024 examples: batch_size 2147483647 trains on all of them
    at once (and the memory estimate uses that batch, not 2^31 examples)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(
        tmp_path / "store", widths=[[8]], seeds=1, epochs=2, checkpoints=[0, 2], swaps=["reinit"],
        batch_size=2147483647,
    )))
    code, out, err = run(capsys, "sweep", str(config), "--no-report")
    assert code == 0, out + err
    assert "sweep tiny: 1 trained" in out
    (row,) = Store.open(str(tmp_path / "store")).read_index("trials").to_pylist()
    assert row["batch_size"] == 2147483647 and row["status"] == "ok" and 0 < row["test_acc"] <= 1
