"""The store's layout: one module names every path, and one parser reads index file names."""

from __future__ import annotations

import pytest

from trainables.errors import StoreError
from trainables.store import layout

TRIAL = "0123456789abcdef"


def test_paths_of_a_trial() -> None:
    assert layout.spec_path(TRIAL) == f"trials/{TRIAL}/spec.json"
    assert layout.weights_path(TRIAL, 3) == f"trials/{TRIAL}/weights/epoch=0003.safetensors"
    assert layout.index_path("swaps", TRIAL) == f"index/swaps/{TRIAL}.parquet"
    batch = layout.batch_path("swaps", TRIAL, b'[["reinit","fc1",0,null,null]]')
    assert batch.startswith(f"index/swaps/{TRIAL}-") and len(batch) == len(f"index/swaps/{TRIAL}-") + 16
    with pytest.raises(ValueError, match="no batch files"):
        layout.batch_path("trials", TRIAL, b"[]")


@pytest.mark.parametrize("bad", ["../../etc", "0123456789ABCDEF", "0123", "", None])
def test_a_path_is_built_only_from_a_trial_id(bad) -> None:
    with pytest.raises(StoreError, match="is not a trial id"):
        layout.weights_path(bad, 0)


def test_one_parser_of_index_file_names() -> None:
    base = layout.parse_index_path(f"index/swaps/{TRIAL}.parquet")
    assert (base.table, base.trial_id, base.batch, base.is_base, base.named_after_a_trial) == (
        "swaps", TRIAL, None, True, True)
    batch = layout.parse_index_path(f"index/criticality/{TRIAL}-deadbeef.parquet")
    assert (batch.trial_id, batch.batch, batch.is_base, batch.named_after_a_trial) == (
        TRIAL, "deadbeef", False, True)
    # trials, weights and layers have no batch files: such a name is not a trial's
    odd = layout.parse_index_path(f"index/trials/{TRIAL}-deadbeef.parquet")
    assert odd.trial_id == f"{TRIAL}-deadbeef" and not odd.named_after_a_trial
    assert not layout.parse_index_path("index/swaps/notes.parquet").named_after_a_trial
    for ignored in (f"index/swaps/_{TRIAL}.parquet.1a2b.tmp", f"index/swaps/sub/{TRIAL}.parquet",
                    f"index/swaps/{TRIAL}.csv", f"trials/{TRIAL}/spec.json"):
        assert layout.parse_index_path(ignored) is None


def test_hidden_names_are_what_a_writer_leaves_behind() -> None:
    assert layout.is_hidden(layout.temporary_name("x.parquet"))
    assert layout.is_hidden(layout.probe_name()) and layout.is_hidden(layout.PREFLIGHT_DIR)
    assert not layout.is_hidden(f"{TRIAL}.parquet")
