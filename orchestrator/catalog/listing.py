"""``layerswap ls``: the complete trials of a store as a table, then counts per sweep."""

from __future__ import annotations

from orchestrator.catalog.contents import describe_diverged, load_contents
from orchestrator.catalog.naming import TRIAL_COLUMNS, names_of_trials
from orchestrator.text_table import text_table
from trainables.store import Store


def format_listing(store: Store, sweep: str | None = None) -> str:
    """``layerswap ls``: the complete trials as a table, then counts per sweep.

    Each row names its configuration by what distinguishes it within its sweep
    (:func:`orchestrator.catalog.naming.name_configs`, the report's names and order) and its
    trial id. Accuracy is printed in percent. Raises StoreError (one line) as ``load_contents``.
    """
    contents = load_contents(store, sweep)
    names = names_of_trials(contents.trials.select(list(TRIAL_COLUMNS)).to_pylist())
    rank = {key: position for position, key in enumerate(names)}
    trials = contents.trials.select(
        ["sweep", "config_id", "trial_id", "seed", "test_acc", "hostname", "node_id", "finished_at",
         "status", "diverged_epoch"]
    ).to_pylist()
    trials.sort(key=lambda r: (rank[(r["sweep"], r["config_id"])], r["seed"]))
    rows = [
        [
            r["sweep"],
            names[(r["sweep"], r["config_id"])],
            str(r["seed"]),
            r["trial_id"],
            f"diverged@{r['diverged_epoch']}" if r["status"] == "diverged" else f"{100 * r['test_acc']:.2f}%",
            r["hostname"] or r["node_id"] or "?",
            r["finished_at"].strftime("%Y-%m-%d %H:%M:%S UTC") if r["finished_at"] else "?",
        ]
        for r in trials
    ]
    header = ["sweep", "configuration", "seed", "trial_id", "test_acc", "node", "finished_at"]
    parts = [text_table(header, rows) if rows else "no complete trials yet"]
    counts = [
        [
            s.sweep,
            str(s.complete),
            "?" if s.expected is None else str(s.expected),
            "? (no config stored)" if s.expected is None else str(len(s.missing)),
        ]
        for s in contents.sweeps
    ]
    if counts:
        parts.append(text_table(["sweep", "complete", "expected", "missing"], counts))
    diverged = describe_diverged(contents.trials)
    if diverged:
        parts.append(diverged)
    if contents.unfinished:
        parts.append(
            f"{len(contents.unfinished)} trial(s) started but not finished: "
            + ", ".join(contents.unfinished[:5])
            + (" …" if len(contents.unfinished) > 5 else "")
        )
    return "\n\n".join(parts)
