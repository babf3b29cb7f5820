"""``layerswap report``: stats tables, figures, report.md and a self-contained report.html.

Reads only complete trials (``orchestrator.listing.load_contents``) and says what
is missing. Accuracies are fractions in the tables and percentage points in the
report text. The report's content is built once as a list of blocks and
rendered twice, to Markdown and to HTML (figures embedded as base64 PNG).

Output files (in ``STORE/report/`` or ``out_dir``): ``stats.parquet``
(``widths`` as list<int32>), ``stats.csv`` (``widths`` as ``"256-128-64"``),
``report.md`` (figures linked by file name), ``report.html``,
``heatmap-<config>.png`` and ``bars-<config>.png`` per width configuration, and
``compare.png`` when there are several width configurations.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator import figures
from orchestrator.listing import StoreContents, load_contents
from orchestrator.stats import (
    ConfigKey,
    compute_stats,
    config_keys,
    config_rows,
    find_row,
    last_epoch,
    layers_of,
    stats_to_arrow,
    stats_to_csv,
    widths_label,
)
from trainables.store import Store, StoreError


class ReportError(StoreError):
    """The store holds nothing a report can be made of; the message says why."""


# --- the document: blocks rendered to Markdown and HTML ---------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class TableBlock:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str
    alt: str
    png: bytes


Block = Heading | Paragraph | Bullets | TableBlock | Image


def render_markdown(blocks: Iterable[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, TableBlock):
            lines = [block.header, tuple("---" for _ in block.header), *block.rows]
            parts.append("\n".join("| " + " | ".join(cells) + " |" for cells in lines))
        else:
            parts.append(f"![{block.alt}]({block.name})")
    return "\n\n".join(parts) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
    "padding:.3em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%;"
    "display:block;margin:1em 0}"
)


def render_html(blocks: Iterable[Block], title: str) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, TableBlock):
            head = "".join(f"<th>{esc(c)}</th>" for c in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f'<img alt="{esc(block.alt)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- formatting ---------------------------------------------------------------------------


def format_ci(mean: float, low: float, high: float, n: int, unit: str = "") -> str:
    """``mean ± half-width`` of a fraction's 95% CI, in percentage points; n = 1: the point."""
    if not np.isfinite(mean):
        return "–"
    if n == 1:
        return f"{100 * mean:.1f}{unit} (n=1)"
    return f"{100 * mean:.1f} ± {100 * (high - mean):.1f}{unit}"


def _acc_cell(row: pd.Series | None) -> str:
    if row is None:
        return "–"
    text = format_ci(row["mean_acc"], row["ci95_low"], row["ci95_high"], int(row["n"]))
    return text if int(row["n"]) == 1 else f"{text} (n={int(row['n'])})"


def compact_ints(values: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``"0–3, 7"``."""
    ordered = sorted(set(values))
    runs: list[list[int]] = []
    for value in ordered:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def compact_layers(layers: Sequence[str], order: Sequence[str]) -> str:
    """Runs of adjacent layers (in ``order``) written as ``fc2–fc4``."""
    positions = [order.index(layer) for layer in layers]
    runs: list[list[int]] = []
    for position in sorted(positions):
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    names = [
        ", ".join(order[p] for p in run) if len(run) < 3 else f"{order[run[0]]}–{order[run[-1]]}"
        for run in runs
    ]
    return ", ".join(names)


# --- verdicts -------------------------------------------------------------------------------

CRITICAL, ROBUST, UNCLEAR = "critical", "robust", "unclear"


@dataclass(frozen=True)
class LayerVerdict:
    """Whether resetting ``layer`` costs more than the threshold, from the drop's 95% CI.

    critical: the whole CI lies above the threshold; robust: the whole CI lies
    below it; unclear: the CI contains it. ``swap`` is the swap it is judged on
    (reinit to epoch 0, or rerandomize when reinit was not measured).
    """

    layer: str
    verdict: str
    swap: str
    drop: float
    low: float
    high: float
    n: int


_SWAP_PHRASE = {
    "reinit": (
        "putting it back to its initial weights",
        "putting them back to their initial weights",
    ),
    "rerandomize": (
        "replacing it with a fresh random draw",
        "replacing them with fresh random draws",
    ),
}


def layer_verdicts(rows: pd.DataFrame, threshold: float) -> list[LayerVerdict]:
    """One verdict per layer of one configuration (layers without reinit/rerandomize skipped)."""
    verdicts = []
    for layer in layers_of(rows):
        for swap, epoch in (("reinit", 0), ("rerandomize", None)):
            row = find_row(rows, swap, layer, epoch)
            if row is not None:
                break
        else:
            continue
        low, high = float(row["drop_ci95_low"]), float(row["drop_ci95_high"])
        verdict = CRITICAL if low > threshold else ROBUST if high < threshold else UNCLEAR
        verdicts.append(
            LayerVerdict(layer, verdict, swap, float(row["mean_drop"]), low, high, int(row["n"]))
        )
    return verdicts


def _points(v: LayerVerdict) -> str:
    return format_ci(v.drop, v.low, v.high, v.n)


def summarize(verdicts: Sequence[LayerVerdict], order: Sequence[str], threshold: float) -> str:
    """Plain words, e.g. "fc1 is critical: putting it back to its initial weights costs
    31.0 ± 4.0 points; fc2–fc4 are robust"."""
    if not verdicts:
        return "No reinit or rerandomize measurements: no layer can be judged."
    by_kind = {k: [v for v in verdicts if v.verdict == k] for k in (CRITICAL, ROBUST, UNCLEAR)}
    limit = f"{100 * threshold:g} points"
    sentences = []
    critical = by_kind[CRITICAL]
    if len(critical) == 1:
        v = critical[0]
        phrase = _SWAP_PHRASE[v.swap][0]
        sentences.append(f"{v.layer} is critical: {phrase} costs {_points(v)} points")
    elif critical:
        names = compact_layers([v.layer for v in critical], order)
        phrase = _SWAP_PHRASE[critical[0].swap][1]
        costs = ", ".join(f"{_points(v)} ({v.layer})" for v in critical)
        sentences.append(f"{names} are critical: {phrase} costs {costs} points")
    else:
        sentences.append(f"No layer is critical (no drop's 95% CI lies above {limit})")
    robust = by_kind[ROBUST]
    if robust:
        names = compact_layers([v.layer for v in robust], order)
        verb = "is" if len(robust) == 1 else "are"
        sentences.append(f"{names} {verb} robust (drop's 95% CI below {limit})")
    for v in by_kind[UNCLEAR]:
        sentences.append(
            f"{v.layer} is unclear (drop {_points(v)} points, its 95% CI contains {limit})"
        )
    text = "; ".join(sentences) + "."
    if any(v.n == 1 for v in verdicts):
        text += " With one seed there is no interval: the verdicts rest on single measurements."
    return text


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigInfo:
    """What the trials of one width configuration were: seeds, epochs, checkpoints, classes."""

    key: ConfigKey
    seeds: tuple[int, ...]
    epochs: tuple[int, ...]
    checkpoints: tuple[int, ...]
    chance: float | None


def _config_infos(trials: pa.Table) -> dict[ConfigKey, ConfigInfo]:
    records = trials.select(
        ["sweep", "dataset", "model", "widths", "seed", "epochs", "checkpoints", "n_classes"]
    ).to_pylist()
    grouped: dict[ConfigKey, list[dict]] = {}
    for r in records:
        key = ConfigKey(r["sweep"], r["dataset"], r["model"], tuple(int(w) for w in r["widths"]))
        grouped.setdefault(key, []).append(r)
    infos = {}
    for key, rs in grouped.items():
        classes = [r["n_classes"] for r in rs if r["n_classes"]]
        infos[key] = ConfigInfo(
            key,
            tuple(sorted({r["seed"] for r in rs})),
            tuple(sorted({r["epochs"] for r in rs})),
            tuple(sorted({c for r in rs for c in r["checkpoints"] or ()})),
            1 / classes[0] if classes else None,
        )
    return infos


def _slug(key: ConfigKey) -> str:
    raw = f"{key.sweep}-{key.dataset}-{key.model}-{widths_label(key.widths)}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


def _run_section(contents: StoreContents, infos: dict[ConfigKey, ConfigInfo]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "What was run")]
    rows = []
    for status in contents.sweeps:
        mine = [i for k, i in infos.items() if k.sweep == status.sweep]
        expected = "?" if status.expected is None else str(status.expected)
        rows.append(
            (
                status.sweep,
                ", ".join(sorted({i.key.dataset for i in mine})) or "–",
                ", ".join(sorted({i.key.model for i in mine})) or "–",
                "; ".join(widths_label(i.key.widths) for i in mine) or "–",
                compact_ints(s for i in mine for s in i.seeds) or "–",
                compact_ints(e for i in mine for e in i.epochs) or "–",
                ", ".join(str(c) for c in sorted({c for i in mine for c in i.checkpoints})) or "–",
                f"{status.complete} / {expected}",
            )
        )
    header = (
        "sweep",
        "dataset",
        "model",
        "widths",
        "seeds",
        "epochs",
        "checkpoints",
        "trials complete / expected",
    )
    blocks.append(TableBlock(header, tuple(rows)))
    notes = []
    for status in contents.sweeps:
        if status.expected is None:
            notes.append(f"{status.sweep}: no sweep config stored; the expected grid is unknown.")
        elif status.missing:
            shown = ", ".join(status.missing[:8]) + (" …" if len(status.missing) > 8 else "")
            notes.append(
                f"{status.sweep}: {len(status.missing)} trial(s) missing (still running, "
                f"crashed or not started): {shown}."
            )
    if contents.unfinished:
        notes.append(
            f"{len(contents.unfinished)} trial(s) have swap rows but no trial row (unfinished); "
            "their rows are left out."
        )
    if notes:
        blocks.append(Paragraph("This report covers the complete trials only."))
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _baseline_section(stats: pd.DataFrame, infos: dict[ConfigKey, ConfigInfo]) -> list[Block]:
    rows = []
    for key in config_keys(stats):
        sub = config_rows(stats, key)
        last = last_epoch(sub)
        chance = infos[key].chance
        rows.append(
            (
                key.sweep,
                key.dataset,
                key.model,
                widths_label(key.widths),
                _acc_cell(find_row(sub, "none", None, 0)),
                f"{_acc_cell(find_row(sub, 'none', None, last))} at epoch {last}",
                "–" if chance is None else f"{100 * chance:.1f}",
            )
        )
    header = (
        "sweep",
        "dataset",
        "model",
        "widths",
        "initial accuracy (epoch 0)",
        "trained accuracy",
        "chance (1/n_classes)",
    )
    return [
        Heading(2, "Baselines"),
        Paragraph("Test accuracy in percent, mean ± 95% CI half-width over seeds (n seeds)."),
        TableBlock(header, tuple(rows)),
    ]


def _config_section(
    stats: pd.DataFrame, key: ConfigKey, info: ConfigInfo, threshold: float
) -> list[Block]:
    rows = config_rows(stats, key)
    last = last_epoch(rows)
    layers = layers_of(rows)
    verdicts = {v.layer: v for v in layer_verdicts(rows, threshold)}
    table = []
    for layer in layers:
        v = verdicts.get(layer)
        table.append(
            (
                layer,
                _acc_cell(find_row(rows, "reinit", layer, 0)),
                _acc_cell(find_row(rows, "transplant", layer, last)),
                _acc_cell(find_row(rows, "rerandomize", layer, None)),
                "–" if v is None else _points(v) + ("" if v.swap == "reinit" else f" [{v.swap}]"),
                "–" if v is None else v.verdict,
            )
        )
    header = (
        "layer",
        "reinit to epoch 0 (%)",
        f"transplant from epoch {last} (%)",
        "rerandomize (%)",
        "drop of reinit@0 vs trained (points)",
        "verdict",
    )
    heat = figures.heatmap_matrix(stats, key)
    bars = figures.bar_data(stats, key, info.chance)
    slug = _slug(key)
    return [
        Heading(2, key.label),
        Paragraph(summarize(list(verdicts.values()), layers, threshold)),
        TableBlock(header, tuple(table)),
        Image(
            f"heatmap-{slug}.png",
            f"heatmap of mean test error, {key.label}",
            figures.to_png(figures.plot_heatmap(heat, f"Mean test error (%) — {key.label}")),
        ),
        Image(
            f"bars-{slug}.png",
            f"per-layer accuracy, {key.label}",
            figures.to_png(figures.plot_bars(bars, f"Per-layer accuracy — {key.label}")),
        ),
    ]


def _compare_section(stats: pd.DataFrame, keys: list[ConfigKey]) -> list[Block]:
    shared_context = len({(k.sweep, k.dataset, k.model) for k in keys}) == 1
    panels = []
    for kind, epoch, title in (
        ("reinit", 0, "layer reset to its initial weights (reinit@0)"),
        ("rerandomize", None, "layer re-randomized"),
    ):
        if not (stats["kind"] == kind).any():
            continue
        labels = [f"widths {widths_label(k.widths)}" if shared_context else k.label for k in keys]
        profiles = [
            figures.drop_profile(stats, k, kind, epoch, label)
            for k, label in zip(keys, labels, strict=True)
        ]
        panels.append((title, profiles))
    if not panels:
        return []
    png = figures.to_png(
        figures.plot_drop_profiles(panels, "Accuracy drop per layer, by width configuration")
    )
    return [
        Heading(2, "Width configurations compared"),
        Image("compare.png", "accuracy drop per layer for each width configuration", png),
    ]


def _reading_notes(threshold: float, has_single_seed: bool) -> list[Block]:
    items = [
        "Accuracies are in percent; a ± value is the half-width of the 95% Student-t interval "
        "over seeds; n is the number of seeds (rerandomize draws are first averaged per seed).",
        "Drop = that seed's trained accuracy minus the swapped network's accuracy, paired by "
        "seed; positive = worse than trained.",
        f"Critical: the drop's 95% interval lies above {100 * threshold:g} points; robust: it "
        "lies below; unclear: it contains the threshold. Judged on reinit to epoch 0 "
        "(rerandomize when reinit was not measured).",
        "Heatmap: rows are the layer changed (last row: the whole network at that checkpoint), "
        "columns the checkpoint a layer is reset to; the last checkpoint is the trained network "
        "itself. The full model's rerandomize cell is blank: a fresh draw of every layer is an "
        "initial network, shown in its epoch-0 cell.",
    ]
    if has_single_seed:
        items.append(
            "Some groups have a single seed (n=1): their interval is the point itself, since no "
            "spread can be estimated from one value."
        )
    return [Heading(2, "How to read this report"), Bullets(tuple(items))]


def _output(store: Store, out_dir: str | None) -> Store:
    if out_dir is None:
        return store.child("report")
    return Store.open(out_dir)


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def build_report(
    contents: StoreContents, store_uri: str, critical_drop: float
) -> tuple[pd.DataFrame, list[Block]]:
    """The stats table and the report's blocks for the complete trials in ``contents``."""
    if contents.trials.num_rows == 0:
        waiting = "; ".join(
            f"{s.sweep}: 0 of {s.expected} finished" for s in contents.sweeps if s.expected
        )
        raise ReportError(
            f"{store_uri}: no complete trials to report" + (f" ({waiting})" if waiting else "")
        )
    stats = compute_stats(contents.trials, contents.swaps)
    infos = _config_infos(contents.trials)
    keys = config_keys(stats)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(1, "layerswap report"),
        Paragraph(f"Store: {store_uri} — generated {generated}."),
        *_run_section(contents, infos),
        *_baseline_section(stats, infos),
    ]
    for key in keys:
        blocks.extend(_config_section(stats, key, infos[key], critical_drop))
    if len(keys) > 1:
        blocks.extend(_compare_section(stats, keys))
    blocks.extend(_reading_notes(critical_drop, bool((stats["n"] == 1).any())))
    return stats, blocks


def write_report(
    store: Store, out_dir: str | None = None, sweep: str | None = None, critical_drop: float = 0.05
) -> list[str]:
    """Write stats, figures and the report; return the paths written.

    ``out_dir`` None writes to ``STORE/report/`` through the store's filesystem
    (so ``s3://`` stores work); otherwise to ``out_dir`` (a local path or URI).
    ``critical_drop`` is a fraction (0.05 = 5 points). Raises ReportError or
    StoreError (one line) for a path that is not a store, a store without
    complete trials, a file that does not match its schema, or an unknown sweep.
    """
    contents = load_contents(store, sweep)
    stats, blocks = build_report(contents, store.uri, critical_drop)
    files: dict[str, bytes] = {
        "stats.parquet": _parquet_bytes(stats_to_arrow(stats)),
        "stats.csv": stats_to_csv(stats).encode("utf-8"),
    }
    files.update({b.name: b.png for b in blocks if isinstance(b, Image)})
    files["report.md"] = render_markdown(blocks).encode("utf-8")
    files["report.html"] = render_html(blocks, "layerswap report").encode("utf-8")
    out = _output(store, out_dir)
    for name, data in files.items():
        out.write_bytes(name, data)
    return [out.path(name) for name in files]
