"""``layerswap report``: stats tables, figures, report.md and a self-contained report.html.

Reads only complete trials (``orchestrator.catalog.listing.load_contents``) and says what
is missing. Accuracies are fractions in the tables and percentage points in the
report text. The content is assembled here as blocks (``orchestrator.report.document``)
and rendered twice, to Markdown and to HTML (figures embedded as base64 PNG);
verdicts come from ``orchestrator.report.verdicts``.

Output files (in ``STORE/report/`` or ``out_dir``): ``stats.parquet``
(``widths`` as list<int32>), ``stats.csv`` (``widths`` as ``"256-128-64"``),
``report.md`` (figures linked by file name), ``report.html``,
``heatmap-<config>.png`` and ``bars-<config>.png`` per configuration, and
``compare.png`` when there are several configurations. Where the store holds
them: ``layer_stats.parquet``/``layer_stats.csv`` (weight movement,
criticality, generalisation gap; :mod:`orchestrator.report.layer_stats`), and per
configuration ``movement-``, ``interpolate-`` and ``criticality-<config>.png``,
with ``criticality-gap-<sweep>.png`` for sweeps of several width configurations.
"""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.catalog.contents import StoreContents, load_contents
from orchestrator.report.document import (
    Block,
    Heading,
    Image,
    Paragraph,
    render_html,
    render_markdown,
)
from orchestrator.report.layer_order import layer_order, with_layer_columns
from orchestrator.report.layer_sections import (
    gap_blocks,
)
from orchestrator.report.layer_stats import (
    LAYER_STATS_COLUMNS,
    compute_layer_stats,
    layer_stats_to_arrow,
    layer_stats_to_csv,
    read_measures,
)
from orchestrator.report.sections import (
    baseline_section,
    compare_section,
    config_infos,
    config_section,
    reading_notes,
    run_section,
)
from orchestrator.report.stats import (
    compute_stats,
    config_views,
    stats_to_arrow,
    stats_to_csv,
)
from orchestrator.report.verdicts import (
    Thresholds,
)
from trainables.store import Store, StoreError, layout
from trainables.store.schemas import TABLE_SCHEMAS


class ReportError(StoreError):
    """The store holds nothing a report can be made of; the message says why."""


def _output(store: Store, out_dir: str | None) -> Store:
    if out_dir is None:
        return store.child(layout.REPORT_DIR)
    return Store.open(out_dir)


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def build_report(
    contents: StoreContents,
    store_uri: str,
    thresholds: Thresholds,
    measures: tuple[pa.Table, pa.Table] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Block]]:
    """The stats and layer_stats tables and the report's blocks for the complete trials in ``contents``;
    ``measures`` are their ``layers`` and ``criticality`` rows (None: none)."""
    if contents.trials.num_rows == 0:
        waiting = "; ".join(
            f"{s.sweep}: 0 of {s.expected} finished" for s in contents.sweeps if s.expected
        )
        raise ReportError(
            f"{store_uri}: no complete trials to report" + (f" ({waiting})" if waiting else "")
        )
    layers = measures[0] if measures is not None else TABLE_SCHEMAS["layers"].empty_table()
    networks = layer_order(contents.trials, layers)
    stats = compute_stats(contents.trials, contents.swaps, networks)
    layer_stats = (
        compute_layer_stats(
            contents.trials, with_layer_columns(measures[0], contents.trials, networks), measures[1], networks
        )
        if measures is not None
        else pd.DataFrame(columns=LAYER_STATS_COLUMNS)
    )
    infos = config_infos(contents.trials)
    views = config_views(stats)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(1, "layerswap report"),
        Paragraph(f"Store: {store_uri} — generated {generated}."),
        *run_section(contents, infos),
        *baseline_section(views, infos),
    ]
    for view in views:
        blocks.extend(
            config_section(view, infos[(view.key.sweep, view.key.config_id)], thresholds, layer_stats)
        )
    if len(views) > 1:
        blocks.extend(compare_section(views))
        blocks.extend(gap_blocks(views, layer_stats))
    blocks.extend(reading_notes(thresholds, any(view.single_seed for view in views), layer_stats))
    return stats, layer_stats, blocks


def write_report(
    store: Store, out_dir: str | None = None, sweep: str | None = None, thresholds: Thresholds | None = None
) -> list[str]:
    """Write stats, figures and the report; return the paths written.

    ``out_dir`` None writes to ``STORE/report/`` through the store's filesystem
    (so ``s3://`` stores work); otherwise to ``out_dir`` (a local path or URI).
    Raises ReportError or StoreError (one line) for a path that is not a store,
    a store without complete trials, a file that does not match its schema, or
    an unknown sweep.
    """
    contents = load_contents(store, sweep)
    measures = read_measures(store, contents.trials.column("trial_id").unique())
    stats, layer_stats, blocks = build_report(contents, store.uri, thresholds or Thresholds(), measures)
    files: dict[str, bytes] = {
        "stats.parquet": _parquet_bytes(stats_to_arrow(stats)),
        "stats.csv": stats_to_csv(stats).encode("utf-8"),
    }
    if not layer_stats.empty:
        files["layer_stats.parquet"] = _parquet_bytes(layer_stats_to_arrow(layer_stats))
        files["layer_stats.csv"] = layer_stats_to_csv(layer_stats).encode("utf-8")
    files.update({b.name: b.png for b in blocks if isinstance(b, Image)})
    files["report.md"] = render_markdown(blocks).encode("utf-8")
    files["report.html"] = render_html(blocks, "layerswap report").encode("utf-8")
    out = _output(store, out_dir)
    for name, data in files.items():
        out.write_bytes(name, data)
    return [out.path(name) for name in files]
