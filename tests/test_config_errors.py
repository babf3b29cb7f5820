"""Bad configs through the real CLI: refused with one line before anything runs.

Every refusal is checked the same way: the exit code, exactly one line on
stderr, no traceback, and the store byte for byte as it was (every file hashed
before and after).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.config.blocks import MAX_NETWORKS
from orchestrator.config.sweep_config import load_config
from tests.helpers import assert_one_line, run_cli, snapshot, tiny_raw_config

ROOT = Path(__file__).resolve().parent.parent


# --- bad configs: refused before anything runs --------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)

BAD_CONFIGS = [
    # (case, how the config text is made from a valid one, text the error line must contain)
    ("alias bomb", lambda text: BOMB, "through its aliases"),
    ("too many aliases", lambda text: "x: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n",
     "more than 100 aliases"),
    ("not UTF-8", lambda text: text.encode() + b"# caf\xe9\n", "is not UTF-8 text (byte 0xe9"),
    ("deep nesting", lambda text: text + "extra: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 32"),
    ("duplicate key", lambda text: text + "epochs: 5\n", "key 'epochs' appears twice"),
    ("not a mapping", lambda text: "- 1\n- 2\n", "must be a YAML mapping of fields, got [1, 2]"),
    ("name too long", lambda text: text.replace("name: tiny", "name: " + "x" * 300), "name: 'xxxxx"),
    ("name with NUL", lambda text: text.replace("name: tiny", 'name: "a\\0b"'), "name: 'a\\x00b'"),
    ("name with slash", lambda text: text.replace("name: tiny", "name: a/b"), "name: 'a/b'"),
    ("name with backslash", lambda text: text.replace("name: tiny", "name: a\\b"), "name: 'a\\\\b'"),
    ("name with newline", lambda text: text.replace("name: tiny", 'name: "a\\nb"'), "name: 'a\\nb'"),
    ("seeds beyond the grid bound", lambda text: text.replace("seeds: 2", "seeds: 1000000000"),
     f"more than {MAX_NETWORKS} networks"),
    ("grid bound with several widths", lambda text: text.replace("seeds: 2", "seeds: 600000"),
     "600000 seeds x 2 width configs"),
    ("seed beyond int64", lambda text: text.replace("seeds: 2", "seeds: [1, 9223372036854775808]"),
     "seeds: 9223372036854775808"),
    ("batch_size beyond int32", lambda text: text.replace("batch_size: 64", "batch_size: 2147483648"),
     "batch_size: 2147483648 is not allowed; expected an integer in [1, 2147483647]"),
    ("epochs beyond int32", lambda text: text.replace("epochs: 3", "epochs: 2147483648"),
     "epochs: 2147483648"),
    ("width beyond int32", lambda text: text.replace("- 12", "- 2147483648"), "widths: [2147483648]"),
    ("long value echoed short", lambda text: text.replace("dataset: synthetic", "dataset: " + "y" * 10_000),
     "dataset: 'yyyyy"),
]


@pytest.mark.parametrize(("make", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_one_line_and_the_store_is_untouched(store, tmp_path, capsys, make, expected):
    root, _ = store
    before = snapshot(root)
    text = make(yaml.safe_dump(tiny_raw_config(root), sort_keys=False))
    config = tmp_path / "config.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, out, err = run_cli(capsys, "sweep", str(config))
    assert code == 2
    line = assert_one_line(err, expected)
    assert len(line) < 400
    assert out == ""
    assert snapshot(root) == before


def test_yaml_floats_resolve_as_in_yaml_1_2(tmp_path):
    raw = tiny_raw_config(tmp_path / "store")
    text = yaml.safe_dump(raw).replace("lr: 0.1", "lr: 1e-3")
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml").optimizer.lr == 0.001


